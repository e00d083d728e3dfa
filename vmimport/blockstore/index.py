"""The dedup index: block digest -> where that block is stored, so a block already in the store
is not written again (by another import, or the same disk imported twice).

A SQLite file beside the packs (``index.sqlite``), separate from the service's database: the
block store stands alone, and the index is only a cache of what the manifests and packs say —
losing entries costs dedup, never data. WAL with ``synchronous=NORMAL``: a commit does not
fsync. That matters more than it seems: on ext4 (data=ordered) an fsync commits the journal,
which first writes back the data of every file in it — the GiB pack just written — so a
synchronous commit at the end of an import stalled it for up to seconds. Several processes on
one host share the index; it is written once per pack and read once per batch of blocks.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterable

from .manifest import BlockRef

_SCHEMA = """
CREATE TABLE IF NOT EXISTS block (
    digest BLOB PRIMARY KEY,
    pack BLOB NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS block_pack ON block (pack);
"""


class DedupIndex:
    """One connection, usable from several threads (calls are serialised)."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def find_many(self, digests: list[str]) -> dict[str, BlockRef]:
        """The stored blocks among ``digests`` (at most a few hundred), by digest."""
        if not digests:
            return {}
        marks = ",".join("?" * len(digests))
        with self._lock:
            rows = self._db.execute(
                f"SELECT digest, pack, offset, length FROM block WHERE digest IN ({marks})",
                [bytes.fromhex(d) for d in digests]).fetchall()
        return {digest.hex(): BlockRef(digest.hex(), pack.hex(), offset, length)
                for digest, pack, offset, length in rows}

    def add(self, refs: Iterable[BlockRef]) -> None:
        """Record blocks of a finished pack; a digest recorded already keeps its first place."""
        rows = [(bytes.fromhex(r.digest), bytes.fromhex(r.pack), r.offset, r.length)
                for r in refs]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO block VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget_packs_except(self, live: set[str]) -> None:
        """Drop the entries of every pack not in ``live`` (before those packs are deleted)."""
        with self._lock:
            packs = [row[0] for row in self._db.execute("SELECT DISTINCT pack FROM block")]
        self.forget_packs(p.hex() for p in packs if p.hex() not in live)

    def forget_packs(self, packs: Iterable[str]) -> None:
        """Drop the entries of ``packs`` (deleted, or compacted: their blocks moved)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM block WHERE pack = ?",
                                     [(bytes.fromhex(p),) for p in packs])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
