"""The object-store block store's dedup index and pack holds, in the service's database, so that
every API and worker process on every machine shares them (``index.py`` is the file store's
SQLite file, which only one machine can see).

``block_index``: block fingerprint -> where it is stored. ``block_packs``: a row per pack a
write holds -- the packs it writes, and the packs it shares blocks of -- with the time it last
said so (``used_at``). gc deletes a pack no manifest uses only by first deleting its row on the
condition that ``used_at`` is older than the grace, in one statement; a write confirms a shared
pack by updating ``used_at`` on its row (``hold``) before it reuses any block of it. The
database orders the two on the row: either the hold comes first and gc keeps the pack, or gc
comes first and the hold finds no row, so the write stores the blocks again. Nothing a write
in flight references is deleted, so gc may run while imports do, on any machine.

Like the file store's index, entries are hints: a block is reused only once its stored bytes
compare equal (``object_packs``), and a failed lookup costs dedup, never data.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from vmimport.db.models import BlockIndexEntry, BlockPack
from vmimport.db.session import Database

from .manifest import BlockRef

_PACKS = BlockPack.__table__
_INDEX = BlockIndexEntry.__table__
CHUNK = 500  # names or digests per statement: well within both databases' parameter limits


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _chunks(items: list, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class SharedDedupIndex:
    """Thread-safe (each call its own short transaction on the database's pool)."""

    def __init__(self, db: Database):
        self._db = db
        dialect = db.write_engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def hold_new(self, pack: str) -> None:
        """Register a pack this write is about to create."""
        with self._db.write() as session:
            session.execute(self._insert(_PACKS).values(name=pack, used_at=_now())
                            .on_conflict_do_nothing())

    def hold(self, packs: Iterable[str]) -> set[str]:
        """Mark ``packs`` as in use now; the ones that still exist (that gc has not taken)."""
        held: set[str] = set()
        for names in _chunks(sorted(set(packs))):
            with self._db.write() as session:
                held.update(session.execute(
                    update(_PACKS).where(_PACKS.c.name.in_(names)).values(used_at=_now())
                    .returning(_PACKS.c.name)).scalars())
        return held

    def find_many(self, digests: list[str]) -> dict[str, BlockRef]:
        """The stored blocks among ``digests``, by digest."""
        found: dict[str, BlockRef] = {}
        for some in _chunks(sorted(set(digests))):
            with self._db.read() as session:
                for digest, pack, offset, length in session.execute(
                        select(_INDEX.c.digest, _INDEX.c.pack, _INDEX.c.offset, _INDEX.c.length)
                        .where(_INDEX.c.digest.in_(some))):
                    found[digest] = BlockRef(digest, pack, offset, length)
        return found

    def add(self, refs: Iterable[BlockRef]) -> None:
        """Record blocks of finished (held) packs; a digest recorded already keeps its place."""
        rows = [{"digest": r.digest, "pack": r.pack, "offset": r.offset, "length": r.length}
                for r in refs]
        for some in _chunks(rows):
            with self._db.write() as session:
                session.execute(self._insert(_INDEX).on_conflict_do_nothing(), some)

    def release(self, pack: str, idle_since: datetime) -> bool:
        """Whether gc may delete ``pack``: no write has held it since ``idle_since`` (its row,
        and its index entries with it, are deleted now, so no write can take it up again)."""
        with self._db.write() as session:
            session.execute(delete(_PACKS).where(_PACKS.c.name == pack,
                                                 _PACKS.c.used_at <= idle_since))
            if session.scalar(select(_PACKS.c.name).where(_PACKS.c.name == pack)) is not None:
                return False  # held recently: a write in flight uses it
            session.execute(delete(_INDEX).where(_INDEX.c.pack == pack))
        return True

    def retire(self, pack: str, idle_since: datetime) -> bool:
        """Whether gc may compact ``pack``: no write has held it since ``idle_since``. If so,
        its index entries are deleted (no write finds its blocks from now on) and its row is
        renewed, as by a hold, so that the gc run that deletes it once no manifest names it
        comes only after the grace: readers and copies of the manifests it was rewritten out of
        are long done. A write that found its blocks just before may still hold and reuse them
        (its manifest then keeps the pack)."""
        with self._db.write() as session:
            renewed = session.execute(
                update(_PACKS).where(_PACKS.c.name == pack, _PACKS.c.used_at <= idle_since)
                .values(used_at=_now()).returning(_PACKS.c.name)).first()
            if renewed is None:
                if session.scalar(select(_PACKS.c.name).where(_PACKS.c.name == pack)):
                    return False  # held recently: a write in flight uses it
                session.execute(self._insert(_PACKS).values(name=pack, used_at=_now())
                                .on_conflict_do_nothing())
            session.execute(delete(_INDEX).where(_INDEX.c.pack == pack))
        return True

    def forget(self, packs: Iterable[str]) -> None:
        """Drop the rows of packs that are gone (those a failed write deleted)."""
        for names in _chunks(sorted(set(packs))):
            with self._db.write() as session:
                session.execute(delete(_INDEX).where(_INDEX.c.pack.in_(names)))
                session.execute(delete(_PACKS).where(_PACKS.c.name.in_(names)))

    def idle_packs(self, idle_since: datetime) -> set[str]:
        with self._db.read() as session:
            return set(session.scalars(select(_PACKS.c.name)
                                       .where(_PACKS.c.used_at <= idle_since)))

    @staticmethod
    def cutoff(grace_seconds: float) -> datetime:
        return _now() - timedelta(seconds=grace_seconds)
