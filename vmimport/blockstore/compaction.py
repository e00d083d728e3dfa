"""Compaction of packs that manifests use only a little of, for both backends.

gc reclaims a pack whole, once no manifest uses it; a pack holding the blocks of a snapshot
that stays and of one that was deleted keeps all its bytes. During a gc run each backend
tallies which blocks of which pack the manifests use (``PackUsage``); a pack whose live bytes
are at most ``compact_below`` of its size (and with at least ``MIN_DEAD_BYTES`` dead) then has
its live blocks copied, checked against their digests and unchanged (sealed blocks stay
sealed: their associated data is the snapshot and block index, not the place), into one new
pack, and every manifest that uses them is rewritten to point there. The old pack is then in
no manifest, and a *later* gc run reclaims it like any other, only once the grace has passed
(the object store's ``claim`` renews the pack's hold; the file store's leaves a ``.retired-``
mark beside it), so that a reader or a CopyImage that read a manifest before its rewrite has
long finished with the old places.

What a backend supplies: ``claim(pack)`` -- whether the pack may be compacted now (no import
holds it), taking it out of dedup so that no new import reuses its blocks -- and
``record(moved)`` -- the moved plaintext blocks' new places, for the dedup index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .interface import BlockStore, CompactionReport
from .manifest import BlockRef, BlockStoreError, Manifest

log = logging.getLogger("vmimport.gc")
MiB = 2**20
# Below this many dead bytes a pack is not worth copying (a small import's pack, mostly).
MIN_DEAD_BYTES = 8 * MiB
# Live bytes copied per gc run at most: a run's work stays bounded on a large store; the
# sparsest packs go first and the rest wait for the next run.
MAX_MOVED_BYTES = 8 * 1024 * MiB


@dataclass
class PackUsage:
    """Which stored blocks the manifests use: per pack, its blocks in use and the snapshots
    using them; and which blocks are plaintext (only those enter the dedup index)."""

    blocks: dict[str, set[BlockRef]] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=dict)
    plaintext: set[BlockRef] = field(default_factory=set)

    def add(self, snapshot_id: str, manifest: Manifest) -> None:
        for ref in manifest.blocks.values():
            self.blocks.setdefault(ref.pack, set()).add(ref)
            self.users.setdefault(ref.pack, set()).add(snapshot_id)
            if manifest.encryption is None:
                self.plaintext.add(ref)

    def live_bytes(self, pack: str) -> int:
        return sum(ref.length for ref in self.blocks.get(pack, ()))

    def sparse(self, sizes: dict[str, int], compact_below: float) -> list[str]:
        """The packs worth compacting among ``sizes`` (pack -> bytes stored), most dead first,
        up to ``MAX_MOVED_BYTES`` of live blocks."""
        if compact_below <= 0:
            return []
        live = {name: self.live_bytes(name) for name in sizes if name in self.blocks}
        found = sorted(((sizes[name] - used, name) for name, used in live.items()
                        if used <= sizes[name] * compact_below
                        and sizes[name] - used >= MIN_DEAD_BYTES), reverse=True)
        chosen, moving = [], 0
        for _, name in found:
            if moving + live[name] > MAX_MOVED_BYTES and chosen:
                break
            chosen.append(name)
            moving += live[name]
        return chosen


def compact(store: BlockStore, usage: PackUsage, packs: Iterable[str], sizes: dict[str, int],
            claim: Callable[[str], bool] = lambda pack: True,
            record: Callable[[list[BlockRef]], None] = lambda moved: None) -> CompactionReport:
    """Move the live blocks of ``packs`` into one new pack and rewrite the manifests using
    them (see the module docstring)."""
    claimed = [pack for pack in packs if claim(pack)]
    if not claimed:
        return CompactionReport()
    moved: dict[BlockRef, BlockRef] = {}
    damaged: list[str] = []
    with store.pack_writer(dedup=False) as sink:
        for pack in claimed:
            mine: dict[BlockRef, BlockRef] = {}
            try:
                for ref in sorted(usage.blocks[pack], key=lambda r: r.offset):
                    new = sink.put(store.get_block(ref))
                    # The digest stays the one the manifests hold (older ones are blake3).
                    mine[ref] = BlockRef(ref.digest, new.pack, new.offset, new.length)
            except BlockStoreError as exc:  # its blocks stay where they are; said in the report
                log.warning("pack %s not compacted: %s", pack, exc)
                damaged.append(pack)
                continue
            moved.update(mine)
    rewritten = 0
    for snapshot_id in sorted(set().union(*(usage.users[p] for p in claimed
                                            if p not in damaged))):
        rewritten += _rewrite(store, snapshot_id, moved)
    record([new for old, new in moved.items() if old in usage.plaintext])
    done = [p for p in claimed if p not in damaged]
    return CompactionReport(len(done), sum(ref.length for ref in moved),
                            sum(sizes[p] for p in done), rewritten, tuple(damaged))


def _rewrite(store: BlockStore, snapshot_id: str, moved: dict[BlockRef, BlockRef]) -> int:
    """1 if the manifest of ``snapshot_id`` now names the new places, 0 if it is gone (the
    snapshot was deleted during the run) or uses none of them."""
    try:
        manifest = store.read_manifest(snapshot_id)
    except BlockStoreError:
        return 0
    blocks = {index: moved.get(ref, ref) for index, ref in manifest.blocks.items()}
    if blocks == manifest.blocks:
        return 0
    # A snapshot deleted between the read above and this write gets its manifest back: the
    # blocks are then kept (never lost) until gc removes the manifest of a snapshot that does
    # not exist (``jobs.gc.remove_orphan_manifests``, 6 hours on).
    store.write_manifest(snapshot_id, replace(manifest, blocks=blocks))
    return 1
