"""STS: GetCallerIdentity, GetSessionToken, AssumeRole, and the temporary credentials they
issue (``ASIA...`` key id, secret, session token, expiry), which the front door honours like a
configured key (``find_temporary``) and authorizes by their origin (``role_allows``).

The secret is stored sealed under the server's root key (signatures are verified with it, so
it must be recoverable); the session token only as its SHA-256. Neither is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from vmimport.blockstore.crypto import IntegrityError, seal, unseal
from vmimport.config import Settings
from vmimport.db.models import IamRole, TemporaryCredential
from vmimport.db.session import Database

from . import policy as iam_policy
from .context import Context, Principal
from .errors import ApiError
from .kms import root_key

log = logging.getLogger("vmimport.sts")

SESSION_TOKEN_SECONDS = (900, 129600, 43200)   # GetSessionToken: min, max, default
ASSUME_ROLE_MIN_SECONDS, ASSUME_ROLE_DEFAULT_SECONDS = 900, 3600
CHAINED_ROLE_MAX_SECONDS = 3600  # a role session assuming a role: one hour at most, as on AWS
# Expired rows are dropped once this old (kept a while so a late request is told "expired").
FORGET_EXPIRED_AFTER = timedelta(days=1)
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role(/(?:[\x21-\x7e]*/)?)([\w+=,.@-]{1,64})")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
_AAD = b"vmimport-sts-secret\0"
# AssumeRole members this server does not apply; refused rather than silently ignored.
_UNSUPPORTED = ("PolicyArns", "Policy", "Tags", "TransitiveTagKeys", "SerialNumber",
                "TokenCode", "SourceIdentity", "ProvidedContexts")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TemporaryKey:
    """A stored temporary credential, as the front door needs it."""

    secret: str
    token_sha256: str
    expires_at: datetime
    principal: Principal

    def token_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token_digest(token), self.token_sha256)

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(timezone.utc)) >= self.expires_at


def looks_temporary(access_key: str) -> bool:
    return access_key.startswith("ASIA")


def find_temporary(db: Database, settings: Settings, access_key: str) -> TemporaryKey | None:
    if not looks_temporary(access_key) or len(access_key) > 32:
        return None
    with db.read() as session:
        row = session.get(TemporaryCredential, access_key)
        if row is None:
            return None
        try:
            secret = unseal(root_key(settings), row.sealed_secret,
                            _AAD + row.access_key_id.encode()).decode()
        except IntegrityError:
            # Sealed under another root key (the configured one changed): not a usable key.
            log.warning("temporary credentials %s cannot be unsealed with the configured "
                        "root key; refused as unknown", access_key)
            return None
        return TemporaryKey(secret, row.token_sha256, row.expires_at, _principal_of(row))


def _principal_of(row: TemporaryCredential) -> Principal:
    if row.role_id is None:  # GetSessionToken: the session is its key's account
        return Principal(row.access_key_id, row.account_id, f"arn:aws:iam::{row.account_id}:root",
                         row.account_id, source_access_key=row.source_access_key, temporary=True)
    role_name = row.role_arn.rsplit("/", 1)[-1]
    return Principal(row.access_key_id, row.account_id,
                     f"arn:aws:sts::{row.account_id}:assumed-role/{role_name}/{row.session_name}",
                     f"{row.role_id}:{row.session_name}", role_id=row.role_id,
                     role_arn=row.role_arn, temporary=True)


def role_allows(db: Database, role_id: str, action: str) -> iam_policy.Decision:
    """Whether the assumed role's inline policies allow ``action`` (``ec2:DescribeImages``)
    now: a policy changed or removed after the role was assumed counts at once."""
    with db.read() as session:
        role = session.get(IamRole, role_id)
        if role is None:
            return iam_policy.Decision(False, "the role no longer exists")
        policies = [(p.name, iam_policy.parse(p.document)) for p in role.policies]
    # Resource-level permissions are not evaluated: a statement must cover every resource.
    return iam_policy.evaluate(policies, action, "*")


# --- the STS actions -------------------------------------------------------------------------

def get_caller_identity(ctx: Context, params: dict) -> dict:
    caller = ctx.caller
    return {"UserId": caller.user_id, "Account": caller.account_id, "Arn": caller.arn}


def get_session_token(ctx: Context, params: dict) -> dict:
    if ctx.caller.temporary:
        raise ApiError("AccessDenied", "Cannot call GetSessionToken with session credentials",
                       403)
    for name in ("SerialNumber", "TokenCode"):
        if params.get(name):
            raise ApiError("ValidationError", f"{name}: there is no MFA on this server")
    low, high, default = SESSION_TOKEN_SECONDS
    seconds = _duration(params, low, high, default)
    with ctx.db.write() as session:
        credentials = _issue(session, ctx.settings, ctx.caller.account_id, seconds,
                             source_access_key=ctx.caller.source_access_key)
    return {"Credentials": credentials}


def end_session(ctx: Context, params: dict) -> dict:
    """vmimport's ``EndSession``: forget the temporary credentials that signed the call, so
    a signed-out console's key (or a leaked one) stops working before it expires."""
    if not ctx.caller.temporary:
        raise ApiError("ValidationException", "EndSession ends temporary credentials (from "
                       "GetSessionToken or AssumeRole); this call was signed with the long-term "
                       f"key {ctx.caller.access_key}, which only the configuration removes")
    with ctx.db.write() as session:
        session.execute(delete(TemporaryCredential).where(
            TemporaryCredential.access_key_id == ctx.caller.access_key))
    log.info("temporary credentials %s ended by their holder", ctx.caller.access_key)
    return {"AccessKeyId": ctx.caller.access_key}


def assume_role(ctx: Context, params: dict) -> dict:
    caller = ctx.caller
    for name in _UNSUPPORTED:
        if params.get(name):
            raise ApiError("ValidationError", f"AssumeRole {name} is not supported by this "
                           "server; the role's inline policies alone decide what its "
                           "sessions may do")
    role_arn, session_name = params["RoleArn"], params["RoleSessionName"]
    if not _SESSION_NAME.fullmatch(session_name):
        raise ApiError("ValidationError", "1 validation error detected: Value at "
                       "'roleSessionName' failed to satisfy constraint: Member must have length "
                       "2 to 64 and match [\\w+=,.@-]*")
    match = _ROLE_ARN.fullmatch(role_arn)
    if match is None:
        raise ApiError("ValidationError", f"{role_arn[:300]!r} is not a role ARN "
                       "(arn:aws:iam::<account>:role/<name>)")
    account_id, path, name = match.groups()
    refused = ApiError("AccessDenied", f"User: {caller.arn} is not authorized to perform: "
                       f"sts:AssumeRole on resource: {role_arn}", 403)
    with ctx.db.write() as session:
        role = session.scalar(select(IamRole).where(IamRole.account_id == account_id,
                                                    IamRole.name_key == name.lower()))
        # A role that does not exist is refused like an untrusting one, as on AWS.
        if role is None or role.path != path:
            raise refused
        trust = iam_policy.parse(role.assume_role_policy, trust=True)
        context = {"aws:PrincipalAccount": caller.account_id, "aws:PrincipalArn": caller.arn}
        if params.get("ExternalId"):
            context["sts:ExternalId"] = params["ExternalId"]
        decision = iam_policy.trust_decision(
            trust, caller.arn, context,
            aws_ids=iam_policy.aws_principal_ids(caller.account_id, caller.arn, caller.role_arn))
        if not decision.allowed:
            raise refused
        high = CHAINED_ROLE_MAX_SECONDS if caller.role_id else role.max_session_duration
        seconds = _duration(params, ASSUME_ROLE_MIN_SECONDS, high, ASSUME_ROLE_DEFAULT_SECONDS)
        arn = f"arn:aws:iam::{account_id}:role{role.path}{role.name}"
        credentials = _issue(session, ctx.settings, account_id, seconds, role_id=role.id,
                             role_arn=arn, session_name=session_name)
        user = {"AssumedRoleId": f"{role.id}:{session_name}",
                "Arn": f"arn:aws:sts::{account_id}:assumed-role/{role.name}/{session_name}"}
    return {"Credentials": credentials, "AssumedRoleUser": user, "PackedPolicySize": 0}


def _duration(params: dict, low: int, high: int, default: int) -> int:
    seconds = params.get("DurationSeconds")
    if seconds is None:
        return min(default, high)
    if not low <= seconds <= high:
        raise ApiError("ValidationError", f"The requested DurationSeconds ({seconds}) is "
                       f"outside the allowed range: {low} to {high} seconds")
    return seconds


def _issue(session, settings: Settings, account_id: str, seconds: int, **origin) -> dict:
    now = datetime.now(timezone.utc)
    session.execute(delete(TemporaryCredential).where(
        TemporaryCredential.expires_at < now - FORGET_EXPIRED_AFTER))
    key_id = "ASIA" + base64.b32encode(secrets.token_bytes(10)).decode()   # 20 characters
    secret = base64.b64encode(secrets.token_bytes(30)).decode()            # 40 characters
    token = base64.b64encode(secrets.token_bytes(240)).decode()
    expires = (now + timedelta(seconds=seconds)).replace(microsecond=0)
    session.add(TemporaryCredential(
        access_key_id=key_id, account_id=account_id,
        sealed_secret=seal(root_key(settings), secret.encode(), _AAD + key_id.encode()),
        token_sha256=token_digest(token), expires_at=expires, created_at=now, **origin))
    return {"AccessKeyId": key_id, "SecretAccessKey": secret, "SessionToken": token,
            "Expiration": expires}
