"""Rows read only to be shown: a model's loaded columns, and its eagerly loaded ("selectin")
children, as named tuples read with SQLAlchemy Core.

Describe* pages render hundreds of rows that are never written back. The ORM's bookkeeping for
each of them (instance state, identity map, collections) was ~45% of a DescribeImportImageTasks
page of 100; these tuples carry the same attribute names (and the model's plain properties),
so the same render and filter code reads both. Deferred columns are left out, as the ORM leaves
them out of its first read; unlike the ORM, reading one is an AttributeError, not a query.
"""

from __future__ import annotations

import functools
from collections import namedtuple

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

# Parent keys per IN (...) of children: the ORM's own selectin batch, well within every
# database's limit on bound parameters.
IN_BATCH = 500


class _Layout:
    def __init__(self, model):
        mapper = sa_inspect(model)
        attrs = [a for a in mapper.column_attrs if not a.deferred]
        self.columns = [a.columns[0] for a in attrs]
        self.children = [r for r in mapper.relationships if r.lazy == "selectin"]
        for rel in self.children:
            if len(rel.local_remote_pairs) != 1:
                raise TypeError(f"{model.__name__}.{rel.key}: only one-column joins are read")
        keys = [a.key for a in attrs]
        base = namedtuple(f"Plain{model.__name__}", keys + [r.key for r in self.children])
        properties = {name: value for name, value in vars(model).items()
                      if isinstance(value, property)}
        self.row_type = type(base.__name__, (base,), {"__slots__": (), **properties})
        # where each child's parent key sits in the parent's row
        self.parent_key_index = [keys.index(mapper.get_property_by_column(
            rel.local_remote_pairs[0][0]).key) for rel in self.children]


@functools.cache
def _layout(model) -> _Layout:
    return _Layout(model)


def read_plain(session, model, *where, order_by=()) -> list:
    """The rows of ``model`` that match ``where``, in ``order_by``, with their children.
    Read on the session's connection without flushing it: for sessions that only read."""
    layout = _layout(model)
    # the session's connection, not session.execute: no ORM result machinery for plain rows
    rows = session.connection().execute(
        select(*layout.columns).where(*where).order_by(*order_by)).all()
    if not layout.children:
        return [layout.row_type._make(r) for r in rows]
    by_parent = [_children(session, rel, {r[i] for r in rows})
                 for rel, i in zip(layout.children, layout.parent_key_index)]
    make = layout.row_type._make
    return [make((*r, *(found.get(r[i], []) for found, i in
                        zip(by_parent, layout.parent_key_index)))) for r in rows]


def _children(session, rel, parent_keys: set) -> dict:
    """``rel``'s rows for each parent key, in the relationship's order."""
    child = rel.mapper.class_
    remote = rel.local_remote_pairs[0][1]
    remote_key = rel.mapper.get_property_by_column(remote).key
    order = list(rel.order_by) if rel.order_by else []
    keys = sorted(k for k in parent_keys if k is not None)
    found: dict = {}
    for start in range(0, len(keys), IN_BATCH):
        for row in read_plain(session, child, remote.in_(keys[start:start + IN_BATCH]),
                              order_by=order):
            found.setdefault(getattr(row, remote_key), []).append(row)
    return found
