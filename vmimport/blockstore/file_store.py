"""The block store's file backend (``interface.BlockStore`` in a local directory): snapshots as
manifests of 512 KiB blocks (EBS's block size), each non-zero block stored once by content
hash. A snapshot's manifest (``manifest.py``) maps block index -> where the block is; a block
that is not in the manifest reads as zeros. Blocks are shared between snapshots (dedup),
so deleting a snapshot only deletes its manifest (see ``FileBlockStore.collect_garbage``).

On-disk layout under ``root``::

    packs/<name>              blocks back to back, a pack per writing thread (``packs.py``)
    packs/.partial-<name>-<pid>@<host>
                              a pack being written (nothing refers to it yet)
    index.sqlite              digest -> place, for dedup (``index.py``)
    manifests/<snapshot-id>   binary manifest
    manifests/.tmp-*          a manifest being written

Files of writes that never finished (a killed import) are reclaimed by ``leftovers``.

Encrypted snapshots use the same files, but what is stored is the *sealed* block
(``crypto.BlockCipher``: AES-256-GCM under the snapshot's own data key, block index and snapshot
id as associated data) and its digest is that of the sealed bytes. Sealing uses a random nonce,
so encrypted blocks are never shared between snapshots (no dedup, they never enter the index, and
nothing at rest — name or content — derives from the plaintext); garbage collection works
unchanged. The manifest of an encrypted snapshot also records the snapshot id, the KMS key ARN
and the data key *wrapped* by that KMS key — never the data key itself.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from . import leftovers
from .compaction import PackUsage, compact
from .crypto import plaintext_block
from .index import DedupIndex
from .interface import GarbageReport, LeftoverReport
from .manifest import (BLOCK_SIZE, BlockRef, BlockStoreError, Manifest,  # noqa: F401 (re-exported)
                       ManifestEncryption)
from .packs import (ZERO_BLOCK, PackWriter, block_digest,  # noqa: F401 (re-exported)
                    digest_matches, out_of_space_is_full, wait_for_index)


class FileBlockStore:
    """Pack files, their dedup index and snapshot manifests in a local directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)
        self.packs_dir = self.root / "packs"
        self.manifests_dir = self.root / "manifests"
        self.packs_dir.mkdir(parents=True, exist_ok=True)
        self.manifests_dir.mkdir(parents=True, exist_ok=True)

    def pack_path(self, ref: BlockRef) -> Path:
        return self.packs_dir / ref.pack

    def pack_writer(self, dedup: bool = True) -> PackWriter:
        """A new pack to write blocks into (see ``PackWriter``). ``dedup=False`` for sealed
        blocks, which are never equal to a stored block."""
        return PackWriter(self.packs_dir, self.index_path if dedup else None, self.location)

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    def get_block(self, ref: BlockRef) -> bytes:
        """The stored bytes of ``ref``, checked against its digest."""
        try:
            fd = os.open(self.packs_dir / ref.pack, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlockStoreError(f"block {ref.digest} is missing from the block store (pack "
                                  f"{ref.pack} is gone)") from None
        try:
            data = os.pread(fd, ref.length, ref.offset)
        finally:
            os.close(fd)
        if len(data) != ref.length or not digest_matches(data, ref.digest):
            raise BlockStoreError(f"block {ref.digest} is damaged (its content in pack "
                                  f"{ref.pack} at offset {ref.offset} no longer matches)")
        return data

    def write_manifest(self, snapshot_id: str, manifest: Manifest) -> None:
        with out_of_space_is_full(self.location):
            _atomic_write(self.manifests_dir / snapshot_id, manifest.to_bytes())

    def read_manifest(self, snapshot_id: str) -> Manifest:
        try:
            manifest = Manifest.from_bytes((self.manifests_dir / snapshot_id).read_bytes())
        except FileNotFoundError:
            raise BlockStoreError(f"snapshot {snapshot_id} has no manifest") from None
        return manifest.check_belongs_to(snapshot_id)

    def read_block(self, manifest: Manifest, index: int, cipher=None) -> bytes:
        """The plaintext of block ``index`` of ``manifest`` (zeros if not stored). An
        encrypted manifest needs its ``crypto.BlockCipher``; a block that fails its digest or
        its authentication raises ``BlockStoreError`` and is never returned."""
        ref = manifest.blocks.get(index)
        if ref is None:
            return bytes(manifest.block_size)
        return plaintext_block(manifest, index, self.get_block(ref), cipher)

    def has_manifest(self, snapshot_id: str) -> bool:
        return (self.manifests_dir / snapshot_id).exists()

    def delete_manifest(self, snapshot_id: str) -> None:
        try:
            (self.manifests_dir / snapshot_id).unlink()
        except FileNotFoundError:
            pass

    def manifests_written_before(self, when: float) -> list[str]:
        found = []
        for path in self.manifests_dir.iterdir() if self.manifests_dir.is_dir() else []:
            if not path.name.startswith("."):
                try:
                    if path.stat().st_mtime < when:
                        found.append(path.name)
                except FileNotFoundError:
                    pass  # deleted meanwhile
        return found

    def _retired_at(self, pack: str) -> float:
        """When compaction moved the blocks out of ``pack`` (0: never)."""
        try:
            return (self.packs_dir / f"{RETIRED_PREFIX}{pack}").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def reclaim_own_leftovers(self) -> LeftoverReport:
        return leftovers.reclaim([self.packs_dir, self.manifests_dir], grace_seconds=None)

    def collect_garbage(self, leftover_grace_seconds: float,
                        written_before: float | None = None,
                        compact_below: float = 0.0) -> GarbageReport:
        """Delete the packs that no manifest refers to (and their index entries), and the crash
        leftovers that are abandoned (see ``leftovers``); then compact the packs manifests use
        at most ``compact_below`` of (``compaction``: a run after the grace deletes them, so
        that a reader that read a manifest before its rewrite is done with it). Call it while
        no import is writing: a pack just finished is not in a manifest yet (``written_before``:
        see the interface)."""
        reclaimed = leftovers.reclaim([self.packs_dir, self.manifests_dir],
                                      leftover_grace_seconds)
        wait_for_index()  # this process's recordings; another's are checked at lookup
        usage = PackUsage()
        for path in self.manifests_dir.iterdir():
            if not path.name.startswith("."):
                usage.add(path.name, Manifest.from_bytes(path.read_bytes()))
        index = DedupIndex(self.index_path)
        retired_since = time.time() - leftover_grace_seconds
        try:
            index.forget_packs_except(set(usage.blocks))
            removed = freed = kept_unused = 0
            sizes: dict[str, int] = {}
            for path in self.packs_dir.iterdir():
                if path.name.startswith(RETIRED_PREFIX) and \
                        not (self.packs_dir / path.name[len(RETIRED_PREFIX):]).exists():
                    path.unlink(missing_ok=True)  # its pack is gone
                if path.name.startswith("."):
                    continue
                stat = path.stat()
                size = stat.st_blocks * 512
                if path.name in usage.blocks:
                    sizes[path.name] = size
                    kept_unused += max(0, size - usage.live_bytes(path.name))
                    continue
                if written_before is not None and stat.st_mtime >= written_before:
                    continue  # perhaps an import's begun after the caller looked: not yet named
                if self._retired_at(path.name) > retired_since:
                    continue  # compacted within the grace
                path.unlink(missing_ok=True)
                (self.packs_dir / f"{RETIRED_PREFIX}{path.name}").unlink(missing_ok=True)
                removed += 1
                freed += size

            def claim(pack: str) -> bool:  # no import runs: dedup needs telling, readers time
                index.forget_packs([pack])
                (self.packs_dir / f"{RETIRED_PREFIX}{pack}").touch()
                return True

            compacted = compact(self, usage, usage.sparse(sizes, compact_below), sizes,
                                claim, index.add)
        finally:
            index.close()
        return GarbageReport(removed, freed, kept_unused, reclaimed, compacted)


RETIRED_PREFIX = ".retired-"  # beside a pack compaction emptied: when, by its mtime


def _atomic_write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=leftovers.TEMP_PREFIX,
                               suffix=leftovers.owner_tag())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
