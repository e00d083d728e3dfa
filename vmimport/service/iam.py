"""IAM roles with trust policies and inline policies, and the service-role checks of the import
calls (``check_service_role``: synchronous, at ImportImage/ImportSnapshot; ``role_policies``:
what the pipeline evaluates before it reads a bucket or uses a key).

Policy documents are stored as the JSON text the user sent and returned URL-encoded, as IAM
does (botocore decodes them back into objects for boto3 and the AWS CLI).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from vmimport.db.models import IamRole, IamRolePolicy

from . import policy as iam_policy
from .context import Context
from .errors import ApiError

VMIE_PRINCIPAL = "vmie.amazonaws.com"
EXTERNAL_ID = "vmimport"
ROLE_ERROR = "The service role {name} provided does not exist or does not have sufficient " \
             "permissions"
_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
_PATH = re.compile(r"^/([\x21-\x7e]*/)?$")


def _no_such_role(name: str) -> ApiError:
    return ApiError("NoSuchEntity", f"The role with name {name} cannot be found.", 404)


def _role(session: Session, account_id: str, name: str | None) -> IamRole:
    role = session.scalar(select(IamRole).where(IamRole.account_id == account_id,
                                                IamRole.name_key == (name or "").lower()))
    if role is None:
        raise _no_such_role(name)
    return role


def _check_document(document: str | None, trust: bool) -> str:
    if not document:
        raise ApiError("ValidationError", "The policy document is empty")
    try:
        iam_policy.parse(document, trust=trust)
    except iam_policy.PolicyError as exc:
        raise ApiError("MalformedPolicyDocument", str(exc)) from None
    return document


def _render_role(role: IamRole) -> dict:
    out = {"Path": role.path, "RoleName": role.name, "RoleId": role.id,
           "Arn": f"arn:aws:iam::{role.account_id}:role{role.path}{role.name}",
           "CreateDate": role.created_at,
           "AssumeRolePolicyDocument": quote(role.assume_role_policy, safe=""),
           "MaxSessionDuration": role.max_session_duration}
    if role.description:
        out["Description"] = role.description
    return out


def create_role(ctx: Context, params: dict) -> dict:
    name, path = params["RoleName"], params.get("Path") or "/"
    if not _NAME.match(name):
        raise ApiError("ValidationError", f"The specified value for roleName is invalid: "
                       f"{name!r} (1-64 of [A-Za-z0-9+=,.@_-])")
    if not _PATH.match(path):
        raise ApiError("ValidationError", "The specified value for path is invalid. It must "
                       "begin and end with / and contain only printable ASCII characters")
    document = _check_document(params.get("AssumeRolePolicyDocument"), trust=True)
    with ctx.db.write() as session:
        exists = session.scalar(select(IamRole.id).where(
            IamRole.account_id == ctx.account_id, IamRole.name_key == name.lower()))
        if exists is not None:
            raise ApiError("EntityAlreadyExists", f"Role with name {name} already exists.", 409)
        role = IamRole(id="AROA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                                           for _ in range(17)),
                       account_id=ctx.account_id, name=name, name_key=name.lower(), path=path,
                       assume_role_policy=document, description=params.get("Description"),
                       max_session_duration=params.get("MaxSessionDuration") or 3600)
        session.add(role)
        session.flush()
        return {"Role": _render_role(role)}


def get_role(ctx: Context, params: dict) -> dict:
    with ctx.db.read() as session:
        return {"Role": _render_role(_role(session, ctx.account_id, params["RoleName"]))}


def _page(items: list, params: dict) -> tuple[list, dict]:
    limit = params.get("MaxItems") or 100
    start = 0
    if params.get("Marker"):
        try:
            start = int(base64.urlsafe_b64decode(params["Marker"].encode()).decode())
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise ApiError("ValidationError", "The Marker is not valid") from None
    page = items[start:start + limit]
    more = start + limit < len(items)
    extra: dict = {"IsTruncated": more}
    if more:
        extra["Marker"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
    return page, extra


def list_roles(ctx: Context, params: dict) -> dict:
    prefix = params.get("PathPrefix") or "/"
    with ctx.db.read() as session:
        roles = [r for r in session.scalars(select(IamRole).where(
            IamRole.account_id == ctx.account_id).order_by(IamRole.name_key))
            if r.path.startswith(prefix)]
        page, extra = _page(roles, params)
        return {"Roles": [_render_role(r) for r in page], **extra}


def delete_role(ctx: Context, params: dict) -> dict:
    with ctx.db.write() as session:
        role = _role(session, ctx.account_id, params["RoleName"])
        if role.policies:
            raise ApiError("DeleteConflict", "Cannot delete entity, must delete policies "
                           "first.", 409)
        session.delete(role)
    return {}


def update_assume_role_policy(ctx: Context, params: dict) -> dict:
    document = _check_document(params.get("PolicyDocument"), trust=True)
    with ctx.db.write() as session:
        _role(session, ctx.account_id, params["RoleName"]).assume_role_policy = document
    return {}


def _check_policy_name(name: str) -> str:
    if not _POLICY_NAME.match(name or ""):
        raise ApiError("ValidationError", f"The specified value for policyName is invalid: "
                       f"{name!r}")
    return name


def put_role_policy(ctx: Context, params: dict) -> dict:
    name = _check_policy_name(params["PolicyName"])
    document = _check_document(params.get("PolicyDocument"), trust=False)
    with ctx.db.write() as session:
        role = _role(session, ctx.account_id, params["RoleName"])
        for existing in role.policies:
            if existing.name == name:
                existing.document = document
                break
        else:
            role.policies.append(IamRolePolicy(name=name, document=document))
    return {}


def _role_policy(role: IamRole, name: str) -> IamRolePolicy:
    for p in role.policies:
        if p.name == name:
            return p
    raise ApiError("NoSuchEntity", f"The role policy with name {name} cannot be found.", 404)


def get_role_policy(ctx: Context, params: dict) -> dict:
    with ctx.db.read() as session:
        role = _role(session, ctx.account_id, params["RoleName"])
        p = _role_policy(role, params["PolicyName"])
        return {"RoleName": role.name, "PolicyName": p.name,
                "PolicyDocument": quote(p.document, safe="")}


def list_role_policies(ctx: Context, params: dict) -> dict:
    with ctx.db.read() as session:
        role = _role(session, ctx.account_id, params["RoleName"])
        page, extra = _page([p.name for p in role.policies], params)
        return {"PolicyNames": page, **extra}


def delete_role_policy(ctx: Context, params: dict) -> dict:
    with ctx.db.write() as session:
        role = _role(session, ctx.account_id, params["RoleName"])
        role.policies.remove(_role_policy(role, params["PolicyName"]))
    return {}


# --- what the import calls and the pipeline use --------------------------------------------

def trust_context(account_id: str, region: str) -> dict[str, str]:
    """What VM Import presents when it assumes the service role."""
    return {"sts:ExternalId": EXTERNAL_ID, "aws:SourceAccount": account_id,
            "aws:SourceArn": f"arn:aws:vmie:{region}:{account_id}:import-task"}


def service_role_problem(session: Session, account_id: str, region: str,
                         name: str) -> str | None:
    """Why ``name`` cannot serve as the import service role, or None if it can."""
    role = session.scalar(select(IamRole).where(IamRole.account_id == account_id,
                                                IamRole.name_key == name.lower()))
    if role is None:
        return f"no role named {name} exists in account {account_id}"
    try:
        trust = iam_policy.parse(role.assume_role_policy, trust=True)
    except iam_policy.PolicyError as exc:
        return f"its trust policy cannot be read ({exc})"
    decision = iam_policy.trust_decision(trust, VMIE_PRINCIPAL,
                                         trust_context(account_id, region))
    if not decision.allowed:
        return decision.reason
    return None


def check_service_role(ctx: Context, name: str) -> None:
    """ImportImage/ImportSnapshot's synchronous role check."""
    with ctx.db.read() as session:
        problem = service_role_problem(session, ctx.account_id, ctx.region, name)
    if problem:
        raise ApiError("InvalidParameter", ROLE_ERROR.format(name=name) + f": {problem}")


def role_policies(session: Session, account_id: str, name: str) -> list[tuple[str, dict]] | None:
    """The role's inline policies as ``(name, document)``; None if the role does not exist.
    A policy that no longer parses counts as granting nothing."""
    role = session.scalar(select(IamRole).where(IamRole.account_id == account_id,
                                                IamRole.name_key == name.lower()))
    if role is None:
        return None
    out = []
    for p in role.policies:
        try:
            out.append((p.name, iam_policy.parse(p.document)))
        except iam_policy.PolicyError:
            continue
    return out
