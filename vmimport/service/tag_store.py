"""Tags as rows: reading, writing and validating the tags of import tasks, images and
snapshots. The API actions over them (CreateTags, ...) are in ``tags``; ``listing`` renders
every Describe* answer with these, so this module imports neither."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vmimport.db.models import Tag

from .errors import ApiError, missing

MAX_TAGS_PER_RESOURCE = 50


def validate_tags(tags: list[dict] | None, where: str = "Tag") -> list[dict]:
    out = []
    for n, tag in enumerate(tags or [], 1):
        key, value = tag.get("Key"), tag.get("Value") or ""
        if key is None:
            raise missing(f"{where}.{n}.Key")
        if not 1 <= len(key) <= 127:
            raise ApiError("InvalidParameterValue",
                           f"Tag key '{key[:40]}' must be 1 to 127 characters long")
        if key.lower().startswith("aws:"):
            raise ApiError("InvalidParameterValue",
                           f"Tag keys starting with 'aws:' are reserved for internal use: {key}")
        if len(value) > 256:
            raise ApiError("InvalidParameterValue",
                           f"The value of tag '{key}' is longer than 256 characters")
        out.append({"Key": key, "Value": value})
    return out


def tags_for(session: Session, account_id: str, resource_ids: list[str]) -> dict[str, dict]:
    """{resource id: {key: value}} for the given resources, in one query."""
    result: dict[str, dict] = defaultdict(dict)
    if not resource_ids:
        return result
    rows = session.execute(select(Tag.resource_id, Tag.key, Tag.value).where(
        Tag.account_id == account_id, Tag.resource_id.in_(resource_ids)))
    for resource_id, key, value in rows:
        result[resource_id][key] = value
    return result


def tag_list(tags: dict[str, str]) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def set_tags(session: Session, account_id: str, resource_id: str, resource_type: str,
             tags: list[dict]) -> None:
    """Create or overwrite tags on one resource (CreateTags semantics)."""
    existing = {t.key: t for t in session.scalars(
        select(Tag).where(Tag.account_id == account_id, Tag.resource_id == resource_id))}
    new_keys = {t["Key"] for t in tags} - existing.keys()
    if len(existing) + len(new_keys) > MAX_TAGS_PER_RESOURCE:
        raise ApiError("TagLimitExceeded",
                       f"The maximum number of tags ({MAX_TAGS_PER_RESOURCE}) for resource "
                       f"{resource_id} has been reached")
    for tag in tags:
        row = existing.get(tag["Key"])
        if row is None:
            session.add(Tag(account_id=account_id, resource_id=resource_id,
                            resource_type=resource_type, key=tag["Key"], value=tag["Value"]))
        else:
            row.value = tag["Value"]


def delete_all_tags(session: Session, account_id: str, resource_id: str) -> None:
    session.execute(delete(Tag).where(Tag.account_id == account_id,
                                      Tag.resource_id == resource_id))
