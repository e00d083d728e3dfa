"""EC2's DryRun: the real call's every check, then ``DryRunOperation`` instead of its effect.

A handler runs as it would without DryRun; the first transaction that would commit a change is
rolled back and answers ``DryRunOperation`` instead. Its checks (syntax, existence, ownership,
conflicts) ran before that point, inside the transaction, so a DryRun call fails exactly where
the real one would. Work outside the database that a handler does before its first write (block
I/O) must call ``Context.would_succeed()`` first.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy.orm import Session

from vmimport.db.session import Database

from .errors import ApiError


def dry_run_operation() -> ApiError:
    return ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")


class DryRunDatabase:
    """A ``Database`` whose write transactions never commit: reaching the end of one means
    the real call would have succeeded."""

    def __init__(self, db: Database):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def read(self):
        return self._db.read()

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._db._write() as session:
            session.begin()
            try:
                yield session
                session.flush()  # constraint violations surface as they would on commit
            finally:
                session.rollback()
        raise dry_run_operation()
