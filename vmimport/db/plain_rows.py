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
from sqlalchemy import bindparam, select

# Parent keys per IN (...) of children: the ORM's own selectin batch, well within every
# database's limit on bound parameters.
IN_BATCH = 500


class _Layout:
    def __init__(self, model):
        mapper = sa_inspect(model)
        attrs = [a for a in mapper.column_attrs if not a.deferred]
        self.columns = [a.columns[0] for a in attrs]
        keys = [a.key for a in attrs]
        self.children = [_Children(rel, keys) for rel in mapper.relationships
                         if rel.lazy == "selectin"]
        base = namedtuple(f"Plain{model.__name__}", keys + [c.key for c in self.children])
        properties = {name: value for name, value in vars(model).items()
                      if isinstance(value, property)}
        self.row_type = type(base.__name__, (base,), {"__slots__": (), **properties})

    def rows(self, session, statement, parameters=None) -> list:
        # the session's connection, not session.execute: no ORM result machinery here
        rows = session.connection().execute(statement, parameters).all()
        make = self.row_type._make
        if not self.children:
            return [make(r) for r in rows]
        found = [(c.read(session, {r[c.parent_key_index] for r in rows}), c.parent_key_index)
                 for c in self.children]
        return [make((*r, *(by_parent.get(r[i], []) for by_parent, i in found)))
                for r in rows]


class _Children:
    """One eagerly loaded relationship: its statement is made once (the parent keys bound as
    an expanding IN), which spares building and keying it on every call."""

    def __init__(self, rel, parent_keys: list[str]):
        if len(rel.local_remote_pairs) != 1:
            raise TypeError(f"{rel}: only one-column joins are read")
        local, remote = rel.local_remote_pairs[0]
        self.key = rel.key
        self.parent_key_index = parent_keys.index(
            rel.parent.get_property_by_column(local).key)
        self.child = rel.mapper.class_
        self.remote_key = rel.mapper.get_property_by_column(remote).key
        self.remote, self.order = remote, list(rel.order_by) if rel.order_by else []
        self._statement = None

    def read(self, session, parent_keys: set) -> dict:
        """The children of each parent key, in the relationship's order."""
        layout = _layout(self.child)
        if self._statement is None:
            self._statement = select(*layout.columns).where(
                self.remote.in_(bindparam("parent_keys", expanding=True))).order_by(*self.order)
        keys = sorted(k for k in parent_keys if k is not None)
        found: dict = {}
        for start in range(0, len(keys), IN_BATCH):
            for row in layout.rows(session, self._statement,
                                   {"parent_keys": keys[start:start + IN_BATCH]}):
                found.setdefault(getattr(row, self.remote_key), []).append(row)
        return found


@functools.cache
def _layout(model) -> _Layout:
    return _Layout(model)


def read_plain(session, model, *where, order_by=()) -> list:
    """The rows of ``model`` that match ``where``, in ``order_by``, with their children.
    Read on the session's connection without flushing it: for sessions that only read."""
    layout = _layout(model)
    return layout.rows(session, select(*layout.columns).where(*where).order_by(*order_by))
