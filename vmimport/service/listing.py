"""What every Describe* call shares: EC2 filters (wildcards, OR within a filter, AND across
filters, ``tag:<key>`` and ``tag-key``) and MaxResults/NextToken paging."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, TypeVar

from sqlalchemy import or_, select

from vmimport.db.plain_rows import read_plain

from .errors import ApiError
from .globs import FilterValues
from .tag_store import tags_for

T = TypeVar("T")

# EC2's bounds on filters, checked before any work. EC2 answers FilterLimitExceeded with these
# texts; the 200 counts every value of the call, not of each filter (clients that split their
# ids in 200s still met it with one more filter of one value).
MAX_FILTER_VALUES = 200
MAX_FILTER_VALUE_LENGTH = 255
# Id lists (ImageIds, Owners, ...): EC2 documents no bound; this one is generous for a client
# and keeps one call's database work small.
MAX_LIST_ITEMS = 1000


def check_bounds(params: dict) -> list[tuple[str, FilterValues]]:
    """Refuse a Describe* call whose lists are larger than EC2 allows, and prepare its
    filters: (name, values) pairs, each compiled once for the whole call."""
    for key, value in params.items():
        if key != "Filters" and isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
            raise ApiError("InvalidParameterValue",
                           f"The parameter {key} has {len(value)} items; at most "
                           f"{MAX_LIST_ITEMS} are allowed")
    filters = params.get("Filters") or []
    if sum(len(f.get("Values") or []) for f in filters) > MAX_FILTER_VALUES:
        raise ApiError("FilterLimitExceeded", "The maximum number of filter values specified "
                       f"on a single call is {MAX_FILTER_VALUES}")
    prepared = []
    for flt in filters:
        name = flt.get("Name")
        values = flt.get("Values") or []
        if not name:
            raise ApiError("InvalidParameterValue", "A filter must have a Name")
        if not values:
            raise ApiError("InvalidParameterValue", f"The filter '{name}' has no Value")
        if any(len(v) > MAX_FILTER_VALUE_LENGTH for v in values):
            raise ApiError("FilterLimitExceeded", "The maximum length for a filter value is "
                           f"{MAX_FILTER_VALUE_LENGTH} characters")
        prepared.append((name, FilterValues(values)))
    return prepared


def filter_items(items: Iterable[T], filters: list[tuple[str, FilterValues]],
                 attributes: Callable[[T, str], list[str | None] | None],
                 tags: Callable[[T], dict[str, str]] | None = None) -> list[T]:
    """Keep the items that match every filter (as prepared by ``check_bounds``).
    ``attributes(item, name)`` returns the item's values for a filter name, or None if the
    name is not a filter this call knows. An item costs one set lookup or one pass of the
    wildcard automaton per value it has, however many values the filter lists."""
    items = list(items)
    for name, wanted in filters:
        kept = []
        for item in items:
            if name.startswith("tag:") and tags is not None:
                own = tags(item)
                key = name[4:]
                ok = key in own and wanted.matches([own[key]])
            elif name == "tag-key" and tags is not None:
                ok = wanted.matches(tags(item).keys())
            elif name == "tag-value" and tags is not None:
                ok = wanted.matches(tags(item).values())
            else:
                have = attributes(item, name)
                if have is None:
                    raise ApiError("InvalidParameterValue",
                                   f"The filter '{name}' is invalid")
                ok = wanted.matches(have)
            if ok:
                kept.append(item)
        items = kept
    return items


def page_window(max_results: int | None, next_token: str | None, min_results: int = 1,
                max_allowed: int = 1000) -> int:
    """Where the page starts (the token is the offset of the next page, opaque to clients);
    MaxResults checked against the call's bounds."""
    start = 0
    if next_token:
        try:
            start = int(base64.urlsafe_b64decode(next_token.encode()).decode().removeprefix("o:"))
            if start < 0:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise ApiError("InvalidNextToken", "The specified NextToken is not valid") from None
    if max_results is not None and not min_results <= max_results <= max_allowed:
        raise ApiError("InvalidParameterValue",
                       f"Value ({max_results}) for parameter maxResults is invalid. "
                       f"Expecting a value between {min_results} and {max_allowed}.")
    return start


def next_token_at(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def paginate(items: list[T], max_results: int | None, next_token: str | None,
             min_results: int = 1, max_allowed: int = 1000) -> tuple[list[T], str | None]:
    """Slice ``items`` (already in a stable order) for one page."""
    start = page_window(max_results, next_token, min_results, max_allowed)
    if max_results is None:
        return items[start:], None
    end = start + max_results
    return items[start:end], next_token_at(end) if end < len(items) else None


def bool_str(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def describe_owned(ctx, params: dict, *, model, ids: list[str] | None, not_found,
                   attributes, render, result_key: str, where=(),
                   page_bounds: tuple[int, int] = (1, 1000), scope=None, narrow=None,
                   narrow_sql=None) -> dict:
    """The body of every Describe* call: the caller's rows of ``model`` (or those of the
    ``scope`` clauses, alternatives: owned or shared with the caller), optionally only ``ids``
    (unknown ones refused with ``not_found(unknown_ids)``), filtered, paged and rendered with
    the caller's tags. ``where`` hides rows (e.g. old tasks) as if they did not exist;
    ``narrow(row)`` (Owner.N, ExecutableBy.N) keeps rows after the ids were checked, so an id
    it drops is no error; ``narrow_sql``, when given, is the same choice as SQL clauses.
    Rows reach ``attributes``, ``narrow`` and ``render`` as read-only tuples (``read_plain``)."""
    filters = check_bounds(params)
    scopes = [model.account_id == ctx.account_id] if scope is None else list(scope)
    with ctx.db.read() as session:
        max_results = params.get("MaxResults")
        if (not ids and not filters and max_results is not None
                and (narrow is None or narrow_sql is not None)):
            # A page of a plain listing (what clients paging through everything send): cut
            # by the database, so a call costs its page, not every row the account has.
            return _describe_page(ctx, session, params, model, scopes,
                                  [*where, *(narrow_sql or ())], render, result_key,
                                  page_bounds)
        rows = read_plain(session, model, or_(*scopes), *where,
                          *([model.id.in_(ids)] if ids else []), order_by=[model.id])
        rows.sort(key=_creation_order)
        if ids:
            found = {r.id for r in rows}
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise not_found(unknown)
        if narrow is not None:
            rows = [r for r in rows if narrow(r)]
        tags = tags_for(session, ctx.account_id, [r.id for r in rows])
        rows = filter_items(rows, filters, attributes, lambda r: tags.get(r.id, {}))
        page, token = paginate(rows, max_results, params.get("NextToken"), *page_bounds)
        result = {result_key: [render(session, r, tags.get(r.id, {})) for r in page]}
    if token:
        result["NextToken"] = token
    return result


def _describe_page(ctx, session, params: dict, model, scopes: list, where: list, render,
                   result_key: str, page_bounds: tuple[int, int]) -> dict:
    """One page in the order of ``_creation_order`` (tokens as ``paginate`` makes them).
    Each scope is read on its own, in index order (account, creation time, id) up to the
    page's end plus one row (which tells whether another page follows): an OR of them would
    make the database sort every row it matches. The page's rows are then loaded by id."""
    max_results = params["MaxResults"]
    start = page_window(max_results, params.get("NextToken"), *page_bounds)
    created = model.created_at if hasattr(model, "created_at") else model.started_at
    keys: set[tuple] = set()
    for scope in scopes:
        keys.update(tuple(key) for key in session.connection().execute(
            select(created, model.id).where(scope, *where).order_by(created, model.id)
            .limit(start + max_results + 1)))
    window = sorted(keys)[start:start + max_results + 1]
    page_ids = [row_id for _, row_id in window[:max_results]]
    loaded = {r.id: r for r in read_plain(session, model, model.id.in_(page_ids))}
    # PostgreSQL reads each statement at its own moment: a row deleted in between is skipped.
    page = [loaded[i] for i in page_ids if i in loaded]
    tags = tags_for(session, ctx.account_id, page_ids)
    result = {result_key: [render(session, r, tags.get(r.id, {})) for r in page]}
    if len(window) > max_results:
        result["NextToken"] = next_token_at(start + max_results)
    return result


def _creation_order(row):
    return (getattr(row, "created_at", None) or getattr(row, "started_at"), row.id)


def describe_tasks(ctx, params: dict, *, model, ids: list[str] | None, not_found_code: str,
                   noun: str, render, result_key: str, where=()) -> dict:
    """Describe*Tasks: the caller's tasks still within the retention period (AWS: 7 days),
    with the ``task-state`` filter and pages of 1 to 500."""
    days = ctx.settings.task_retention_days
    horizon = datetime.now(timezone.utc) - timedelta(days=days)

    def unknown(missing_ids):
        return ApiError(not_found_code, f"The {noun} id '{missing_ids[0]}' does not exist (or "
                        f"finished more than {days:g} days ago)")

    recent = or_(model.finished_at.is_(None), model.finished_at >= horizon)
    return describe_owned(
        ctx, params, model=model, ids=ids, not_found=unknown, where=(*where, recent),
        attributes=lambda t, name: [t.status] if name == "task-state" else None,
        render=render, result_key=result_key, page_bounds=(1, 500))
