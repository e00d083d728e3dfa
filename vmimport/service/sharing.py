"""Sharing between accounts, with EC2's semantics: an AMI's launch permissions and a
snapshot's create-volume permissions name accounts (``UserId``) or everyone (``Group`` 'all').

An account sees (DescribeImages / DescribeSnapshots) and may copy what it owns, what is shared
with it and what is public; only the owner may change, tag, export or deregister a resource,
and only the owner sees whom it is shared with.
"""

from __future__ import annotations

import re

from sqlalchemy import or_, select

from vmimport.db.models import CreateVolumePermission, Image, LaunchPermission, Snapshot

from .errors import ApiError, invalid_value, not_found

PUBLIC = "all"
_ACCOUNT = re.compile(r"\d{12}")


# --- who sees what ---------------------------------------------------------------------------

def visible_images(account_id: str) -> list:
    """DescribeImages' rows, as alternative clauses: owned; shared with the account, or
    public."""
    shared = select(LaunchPermission.image_id).where(
        or_(LaunchPermission.user_id == account_id, LaunchPermission.group_name == PUBLIC))
    return [Image.account_id == account_id, Image.id.in_(shared)]


def visible_snapshots(account_id: str) -> list:
    shared = select(CreateVolumePermission.snapshot_id).where(
        or_(CreateVolumePermission.user_id == account_id,
            CreateVolumePermission.group_name == PUBLIC))
    return [Snapshot.account_id == account_id, Snapshot.id.in_(shared)]


def _granted(permissions, account_id: str) -> bool:
    return any(p.user_id == account_id or p.group_name == PUBLIC for p in permissions)


def is_public(permissions) -> bool:
    return any(p.group_name == PUBLIC for p in permissions)


def may_use_image(image: Image, account_id: str) -> bool:
    return image.account_id == account_id or _granted(image.launch_permissions, account_id)


def may_read_snapshot(snapshot: Snapshot, account_id: str) -> bool:
    return (snapshot.account_id == account_id
            or _granted(snapshot.volume_permissions, account_id))


def narrowing(model, owners: list[str] | None, users: list[str] | None, account_id: str,
              permissions_of) -> dict:
    """Describe*'s ``narrow`` and ``narrow_sql`` (see ``listing.describe_owned``) for Owner.N /
    OwnerId.N and ExecutableBy.N / RestorableBy.N: the owners are SQL too; the users need the
    rows' permissions, so with them there is no SQL form."""
    wanted = {account_id if o == "self" else o for o in owners or []}
    owned = (lambda row: row.account_id in wanted) if wanted else None
    return {"narrow": both(owned, users_predicate(users, account_id, permissions_of)),
            "narrow_sql": None if users else
            [model.account_id.in_(wanted)] if wanted else []}


def users_predicate(users: list[str] | None, account_id: str, permissions_of):
    """ExecutableBy.N / RestorableBy.N: 'all' (public), 'self' or the caller's own id (shared
    with the caller), another account id (the caller's resources shared with it)."""
    if not users:
        return None

    def keep(row) -> bool:
        permissions = permissions_of(row)
        for user in users:
            if user == PUBLIC and is_public(permissions):
                return True
            if user in ("self", account_id) and any(p.user_id == account_id
                                                    for p in permissions):
                return True
            if row.account_id == account_id and any(p.user_id == user for p in permissions):
                return True
        return False
    return keep


def both(*predicates):
    kept = [p for p in predicates if p is not None]
    return (lambda row: all(p(row) for p in kept)) if kept else None


# --- the owner's rights ----------------------------------------------------------------------

def owned_image(session, image_id: str, account_id: str) -> Image:
    """The image, for an action only its owner may take: one the caller may only use (shared
    or public) is ``AuthFailure``, one it cannot see ``InvalidAMIID.NotFound``."""
    return _owned(session.get(Image, image_id), image_id, account_id, may_use_image,
                  "InvalidAMIID.NotFound", "image")


def owned_snapshot(session, snapshot_id: str, account_id: str) -> Snapshot:
    return _owned(session.get(Snapshot, snapshot_id), snapshot_id, account_id,
                  may_read_snapshot, "InvalidSnapshot.NotFound", "snapshot")


def _owned(row, row_id: str, account_id: str, may_see, not_found_code: str, noun: str):
    if row is None or not may_see(row, account_id):
        raise not_found(not_found_code, row_id)
    if row.account_id != account_id:
        raise ApiError("AuthFailure", f"Not authorized for {noun}:{row_id}: it is shared with "
                       f"account {account_id}; only its owner may change it", 403)
    return row


# --- changing permissions --------------------------------------------------------------------

def _grantee(entry: dict, what: str) -> tuple[str | None, str | None]:
    """(user_id, group) of one LaunchPermission / CreateVolumePermission entry."""
    if entry.get("OrganizationArn") or entry.get("OrganizationalUnitArn"):
        raise ApiError("InvalidParameter", f"{what}: sharing with organizations or "
                       "organizational units is not supported (there are no organizations "
                       "on this server); name account ids")
    user, group = entry.get("UserId"), entry.get("Group")
    if (user is None) == (group is None):
        raise ApiError("InvalidParameter", f"{what}: give exactly one of UserId and Group")
    if user is not None and not _ACCOUNT.fullmatch(user):
        raise invalid_value("UserId", user, "An account id is 12 digits.")
    if group is not None and group != PUBLIC:
        raise invalid_value("Group", group, "The only group is 'all'.")
    return user, group


def change_permissions(rows: list, make, add: list[dict], remove: list[dict], what: str,
                       encrypted: bool) -> None:
    """Apply Add then Remove to ``rows`` (a relationship list; ``make(user, group)`` builds a
    row). Adding a grantee twice or removing one never added is not an error, as on EC2."""
    grants = [_grantee(e, what) for e in add]
    revokes = {_grantee(e, what) for e in remove}
    if encrypted and any(group == PUBLIC for _user, group in grants):
        raise ApiError("InvalidParameter", f"{what}: encrypted resources cannot be made "
                       "public; share them with account ids")
    have = {(r.user_id, r.group_name): r for r in rows}
    for key in grants:
        if key not in have and key not in revokes:
            have[key] = make(*key)
            rows.append(have[key])
    for key in revokes:
        if key in have:
            rows.remove(have.pop(key))


def render_permissions(rows) -> list[dict]:
    return [{"Group": r.group_name} if r.group_name else {"UserId": r.user_id} for r in rows]
