"""ClientToken idempotency, as EC2 does it for every task-creating call: the same token with the
same parameters answers the task it created; with other parameters it is refused."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select

from .errors import ApiError


def request_digest(params: dict) -> str:
    """Fingerprint of a request (token and DryRun excluded)."""
    relevant = {k: v for k, v in params.items() if k not in ("ClientToken", "DryRun")}
    blob = json.dumps(relevant, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def existing_for_token(session, model, account_id: str, token: str | None, digest: str,
                       same_kind=lambda row: True):
    """The row an earlier request with ``token`` created, or None; refuses a reuse of the token
    with other parameters (or, per ``same_kind``, for another kind of task)."""
    if token is None:
        return None
    row = session.scalar(select(model).where(model.account_id == account_id,
                                             model.client_token == token))
    if row is None:
        return None
    if row.request_digest != digest or not same_kind(row):
        raise ApiError("IdempotentParameterMismatch",
                       f"The client token '{token}' was already used with different "
                       f"parameters (by task {row.id}); use a new token for a new request")
    return row
