"""What the pipeline and the services ask of a block store, whichever backend holds the bytes.

Two backends: ``file_store.FileBlockStore`` (a local directory) and
``object_store.ObjectBlockStore`` (packs and manifests as objects in an S3-compatible bucket).
``backends.open_block_store`` picks one from the settings; nothing else constructs a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .manifest import BlockRef, BlockStoreError, Manifest


class BlockStoreFull(BlockStoreError):
    """The store ran out of space (or quota) while blocks or a manifest were written."""

    def __init__(self, location: str):
        super().__init__(f"no space left in the block store ({location})")
        self.location = location


@dataclass(frozen=True)
class LeftoverReport:
    """Crash leftovers (packs of writes that never finished, half-written manifests) removed."""

    removed: int = 0
    bytes_removed: int = 0


@dataclass(frozen=True)
class CompactionReport:
    """Sparse packs whose live blocks gc moved into a new pack (``compaction``)."""

    packs: int = 0  # packs now in no manifest: a later run reclaims them
    bytes_moved: int = 0
    bytes_to_reclaim: int = 0  # the compacted packs' sizes
    manifests_rewritten: int = 0
    damaged: tuple[str, ...] = ()  # packs left as they were: a live block failed its digest


@dataclass(frozen=True)
class GarbageReport:
    packs_removed: int
    bytes_removed: int
    unreferenced_bytes_kept: int  # blocks no manifest uses, inside packs that others still use
    leftovers: LeftoverReport = LeftoverReport()
    compaction: CompactionReport = CompactionReport()


class FinishedOnSuccess:
    """A write used as a context manager: ``finish()`` when the block exits normally,
    ``abort()`` when it raises (a cancelled or failed import leaves nothing behind)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


class PackSink(Protocol):
    """Where one write (a volume, a re-sealed copy) stores its blocks. A context manager: on
    success the blocks become readable by the refs returned; on an exception all are dropped."""

    blocks_written: int  # blocks this write stored itself (the others it was given were shared)

    def put_blocks(self, blocks: list[list[tuple[int, memoryview]]]) -> list[BlockRef]:
        """Store 512 KiB blocks given as pieces [(offset within the block, data)], zeros
        elsewhere; a block stored already (same bytes) may be shared instead of written."""

    def put(self, data) -> BlockRef:
        """Store one sealed block as it is (never shared)."""

    def __enter__(self) -> "PackSink": ...

    def __exit__(self, exc_type, exc, tb) -> None: ...


class BlockStore(Protocol):
    """Snapshots as manifests of blocks (see ``manifest.py``), blocks shared between them."""

    location: str  # where the store is, for messages and logs (never credentials)

    def pack_writer(self, dedup: bool = True) -> PackSink:
        """A new write; ``dedup=False`` for sealed blocks, which never equal a stored one."""

    def read_block(self, manifest: Manifest, index: int, cipher=None) -> bytes:
        """The plaintext of block ``index`` (zeros if not stored), checked against its digest
        and, for an encrypted manifest, opened with its ``crypto.BlockCipher``."""

    def write_manifest(self, snapshot_id: str, manifest: Manifest) -> None: ...

    def read_manifest(self, snapshot_id: str) -> Manifest: ...

    def has_manifest(self, snapshot_id: str) -> bool: ...

    def delete_manifest(self, snapshot_id: str) -> None:
        """Gone, or never there; the blocks stay until ``collect_garbage``."""

    def manifests_written_before(self, when: float) -> list[str]:
        """The snapshot ids whose manifest was last written before ``when`` (epoch seconds)."""

    def collect_garbage(self, leftover_grace_seconds: float,
                        written_before: float | None = None,
                        compact_below: float = 0.0) -> GarbageReport:
        """Delete the packs no manifest uses, and crash leftovers that are not in use and are
        either this host's with their process gone or older than ``leftover_grace_seconds``.
        Call it while no import is writing (a pack just finished is in no manifest yet);
        ``written_before`` (epoch seconds: when the caller saw no import running) keeps the
        packs written since, which an import started after that moment may not have named
        in a manifest yet. ``compact_below`` (0: never): packs whose live bytes are at most this
        fraction of them are compacted (``compaction``)."""

    def reclaim_own_leftovers(self) -> LeftoverReport:
        """Delete the crash leftovers of this host's processes that are gone (worker start)."""
