"""Engines and sessions. SQLite (WAL, busy timeout, ``BEGIN IMMEDIATE`` for writers) by default,
PostgreSQL by URL. Transactions are short and never span image I/O."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration's revision (tests/test_migrations.py checks it against Alembic's head):
# a database already there needs no Alembic at all.
HEAD_REVISION = "0013"
# No statement of the API or the workers should run this long; one that does (a pathological
# query) is cancelled instead of holding a connection and its locks. Migrations are exempt.
STATEMENT_TIMEOUT_MS = 60_000


class Database:
    """Two session factories: ``write()`` takes the write lock up front on SQLite (so two
    writers never deadlock upgrading a shared lock), ``read()`` does not block writers."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.write_engine = self.read_engine = create_engine(
                url, pool_size=10, max_overflow=20, pool_pre_ping=True,
                connect_args={"options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    def location(self) -> str:
        """Where the database keeps its files, for messages: the SQLite file's directory, or
        the server (never its password)."""
        url = make_url(self.url)
        if self.is_sqlite:
            return str(Path(url.database or ".").resolve().parent)
        return f"the database server {url.host or 'localhost'}"

    @staticmethod
    def is_out_of_space(exc: BaseException) -> bool:
        """Whether ``exc`` says the database's disk (or quota) is full: SQLITE_FULL, or
        PostgreSQL's disk_full (SQLSTATE 53100)."""
        if not isinstance(exc, OperationalError):
            return False
        orig = exc.orig
        return (getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL"
                or getattr(orig, "sqlstate", None) == "53100"
                or "database or disk is full" in str(orig))

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Whether ``exc`` is the database failing rather than what was asked of it, so that
        the same work may succeed when tried again: a lost connection, a deadlock or
        serialization failure, a statement cancelled (its timeout) or the server shutting
        down, too many connections, SQLite's lock wait run out. Not a full disk."""
        if not isinstance(exc, DBAPIError) or Database.is_out_of_space(exc):
            return False
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None)
        if state:  # PostgreSQL: connection (08), rollback (40), operator intervention (57)
            return state[:2] in ("08", "40", "57") or state == "53300"
        return isinstance(exc, OperationalError) and any(
            text in str(exc.orig) for text in ("database is locked", "database is busy"))

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def revision(self) -> str | None:
        """The schema's Alembic revision; None for a database without one (new)."""
        try:
            with self.read() as session:
                return session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None

    def migrate_in_child(self, log_level: str = "info", log_format: str = "text",
                         verbose: bool = False) -> None:
        """``migrate`` for a long-running process: Alembic (~12 MiB once imported, never
        freed) runs in a child process, and only when the schema is not at HEAD_REVISION."""
        if self.revision() == HEAD_REVISION:
            return
        env = {**os.environ, "VMIMPORT_MIGRATE_URL": self.url,  # not argv: ps shows argv
               "VMIMPORT_MIGRATE_LOG": f"{log_level} {log_format} {int(verbose)}"}
        done = subprocess.run([sys.executable, "-m", "vmimport.db.upgrade"], env=env)
        if done.returncode:
            raise SystemExit(f"vmimport: migrating the database ({self.location()}) failed "
                             f"with exit status {done.returncode}; its log is above")

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision, in this process."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.write_engine.begin() as connection:
            if not self.is_sqlite:
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    # Keep enough connections for the API's thread pool and the workers: opening a SQLite
    # connection (and its PRAGMAs) per request costs more than the query.
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                           pool_size=32, max_overflow=32)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
