"""What every Describe* call shares: EC2 filters (wildcards, OR within a filter, AND across
filters, ``tag:<key>`` and ``tag-key``) and MaxResults/NextToken paging."""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import Callable, Iterable, Sequence, TypeVar

from sqlalchemy import select

from .errors import ApiError
from .tag_store import tags_for

T = TypeVar("T")


@lru_cache(maxsize=512)
def _wildcard(pattern: str) -> re.Pattern:
    # EC2 wildcards are '*' and '?'; '\' escapes them. fnmatch's [...] sets are not EC2 syntax.
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def value_matches(patterns: Sequence[str], values: Iterable[str | None]) -> bool:
    vals = [v for v in values if v is not None]
    return any(_wildcard(p).match(v) for p in patterns for v in vals)


def apply_filters(items: Iterable[T], filters: list[dict] | None,
                  attributes: Callable[[T, str], list[str | None] | None],
                  tags: Callable[[T], dict[str, str]] | None = None) -> list[T]:
    """Keep the items that match every filter. ``attributes(item, name)`` returns the item's
    values for a filter name, or None if the name is not a filter this call knows."""
    items = list(items)
    for flt in filters or []:
        name = flt.get("Name")
        values = flt.get("Values") or []
        if not name:
            raise ApiError("InvalidParameterValue", "A filter must have a Name")
        if not values:
            raise ApiError("InvalidParameterValue", f"The filter '{name}' has no Value")
        kept = []
        for item in items:
            if name.startswith("tag:") and tags is not None:
                own = tags(item)
                key = name[4:]
                ok = key in own and value_matches(values, [own[key]])
            elif name == "tag-key" and tags is not None:
                ok = value_matches(values, tags(item).keys())
            elif name == "tag-value" and tags is not None:
                ok = value_matches(values, tags(item).values())
            else:
                have = attributes(item, name)
                if have is None:
                    raise ApiError("InvalidParameterValue",
                                   f"The filter '{name}' is invalid")
                ok = value_matches(values, have)
            if ok:
                kept.append(item)
        items = kept
    return items


def paginate(items: list[T], max_results: int | None, next_token: str | None,
             min_results: int = 1, max_allowed: int = 1000) -> tuple[list[T], str | None]:
    """Slice ``items`` (already in a stable order) for one page; the token is the offset of
    the next page, opaque to clients."""
    start = 0
    if next_token:
        try:
            start = int(base64.urlsafe_b64decode(next_token.encode()).decode().removeprefix("o:"))
            if start < 0:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise ApiError("InvalidNextToken", "The specified NextToken is not valid") from None
    if max_results is None:
        return items[start:], None
    if not min_results <= max_results <= max_allowed:
        raise ApiError("InvalidParameterValue",
                       f"Value ({max_results}) for parameter maxResults is invalid. "
                       f"Expecting a value between {min_results} and {max_allowed}.")
    page = items[start:start + max_results]
    end = start + max_results
    token = base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if end < len(items) else None
    return page, token


def bool_str(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def describe_owned(ctx, params: dict, *, model, ids: list[str] | None, not_found,
                   attributes, render, result_key: str, where=(), visible=None,
                   page_bounds: tuple[int, int] = (1, 1000), owned: bool = True) -> dict:
    """The body of every Describe* call: the caller's rows of ``model`` (optionally only
    ``ids``, unknown ones refused with ``not_found(unknown_ids)``), filtered, paged and
    rendered with their tags. ``visible(row)`` hides rows (e.g. old tasks); ``owned=False``
    means an Owner filter excluded this account, so the answer is empty."""
    with ctx.db.read() as session:
        query = select(model).where(model.account_id == ctx.account_id, *where)
        if ids:
            query = query.where(model.id.in_(ids))
        rows = [r for r in session.scalars(query.order_by(model.id))
                if visible is None or visible(r)]
        rows.sort(key=_creation_order)
        if ids:
            unknown = [i for i in ids if i not in {r.id for r in rows}]
            if unknown:
                raise not_found(unknown)
        if not owned:
            rows = []
        tags = tags_for(session, ctx.account_id, [r.id for r in rows])
        rows = apply_filters(rows, params.get("Filters"), attributes,
                             lambda r: tags.get(r.id, {}))
        page, token = paginate(rows, params.get("MaxResults"), params.get("NextToken"),
                               *page_bounds)
        result = {result_key: [render(session, r, tags.get(r.id, {})) for r in page]}
    if token:
        result["NextToken"] = token
    return result


def _creation_order(row):
    return (getattr(row, "created_at", None) or getattr(row, "started_at"), row.id)
