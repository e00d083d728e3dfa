"""CreateTags, DeleteTags, DescribeTags — for import tasks, images and snapshots."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vmimport.db.ids import resource_type_of
from vmimport.db.models import ExportTask, Image, ImportTask, Snapshot, Tag
from vmimport.db.plain_rows import read_plain

from .context import Context
from .errors import ApiError, missing, not_found
from .listing import check_bounds, filter_items, paginate
from .tag_store import set_tags, validate_tags

_MODELS = {"import-image-task": ImportTask, "import-snapshot-task": ImportTask,
           "export-image-task": ExportTask, "image": Image, "snapshot": Snapshot}


def _check_resources(session: Session, ctx: Context, resource_ids: list[str]) -> dict[str, str]:
    """Resource id -> resource type, refusing ids that are not ours or do not exist."""
    types = {}
    for rid in resource_ids:
        rtype = resource_type_of(rid)
        if rtype is None:
            raise ApiError("InvalidID", f"The ID '{rid}' is not valid")
        row = session.get(_MODELS[rtype], rid)
        if row is None or row.account_id != ctx.account_id:
            code = {"image": "InvalidAMIID.NotFound", "snapshot": "InvalidSnapshot.NotFound"}.get(
                rtype, "InvalidID")
            if code == "InvalidID":
                raise ApiError("InvalidID", f"The ID '{rid}' does not exist")
            raise not_found(code, rid)
        types[rid] = rtype
    return types


def create_tags(ctx: Context, params: dict) -> dict:
    resource_ids = params.get("Resources") or []
    if not resource_ids:
        raise missing("ResourceId.1")
    if not params.get("Tags"):
        raise missing("Tag.1")
    tags = validate_tags(params["Tags"])
    with ctx.db.write() as session:
        types = _check_resources(session, ctx, resource_ids)
        for rid in resource_ids:
            set_tags(session, ctx.account_id, rid, types[rid], tags)
    return {}


def delete_tags(ctx: Context, params: dict) -> dict:
    resource_ids = params.get("Resources") or []
    if not resource_ids:
        raise missing("ResourceId.1")
    with ctx.db.write() as session:
        _check_resources(session, ctx, resource_ids)
        query = delete(Tag).where(Tag.account_id == ctx.account_id,
                                  Tag.resource_id.in_(resource_ids))
        rows = session.scalars(select(Tag).where(Tag.account_id == ctx.account_id,
                                                 Tag.resource_id.in_(resource_ids))).all()
        wanted = params.get("Tags")
        if not wanted:  # no Tag.N: delete every tag of the resources
            session.execute(query)
            return {}
        for row in rows:
            for tag in wanted:
                # A tag given with a value only deletes the tag if the value matches.
                if tag.get("Key") == row.key and ("Value" not in tag or tag["Value"] == row.value):
                    session.delete(row)
                    break
    return {}


_TAG_FILTERS = {
    "key": lambda t: [t.key],
    "value": lambda t: [t.value],
    "resource-id": lambda t: [t.resource_id],
    "resource-type": lambda t: [t.resource_type],
}


def describe_tags(ctx: Context, params: dict) -> dict:
    filters = check_bounds(params)
    with ctx.db.read() as session:
        rows = read_plain(session, Tag, Tag.account_id == ctx.account_id,
                          order_by=[Tag.resource_id, Tag.key])

    def attributes(tag, name):
        getter = _TAG_FILTERS.get(name)
        return getter(tag) if getter else None

    def own_tags(tag):  # tag:<key> on DescribeTags filters the resources carrying that tag
        return {tag.key: tag.value}

    rows = filter_items(rows, filters, attributes, own_tags)
    page, token = paginate(rows, params.get("MaxResults"), params.get("NextToken"),
                           min_results=5, max_allowed=1000)
    result = {"Tags": [{"Key": t.key, "Value": t.value, "ResourceId": t.resource_id,
                        "ResourceType": t.resource_type} for t in page]}
    if token:
        result["NextToken"] = token
    return result
