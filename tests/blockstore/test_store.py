"""The block store: pack files, dedup through the index, blocks read by the writer itself
(deferred ranges of a local file), failed writes leaving nothing, garbage collection."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vmimport.blockstore.index import DedupIndex
from vmimport.blockstore import packs
from vmimport.blockstore.packs import PackWriter
from vmimport.blockstore.reader import SnapshotReader
from vmimport.blockstore.file_store import (BLOCK_SIZE, BlockRef, BlockStoreError,
                                            FileBlockStore, Manifest, wait_for_index)
from vmimport.blockstore.writer import write_snapshot
from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline.formats import open_guest_disks
from vmimport.pipeline.formats.base import Limits
from vmimport.pipeline.formats.ranges import FileRange
from vmimport.pipeline.source import LocalSource

MiB = 1024 * 1024


def _disk(path: Path, size: int = 16 * MiB) -> bytes:
    """A sparse raw file: random data, a block of explicit zeros, a partly-filled block, the
    same 512 KiB twice (dedup within one snapshot), holes."""
    data = bytearray(size)
    data[0:3 * BLOCK_SIZE] = os.urandom(3 * BLOCK_SIZE)
    data[5 * BLOCK_SIZE + 4096:5 * BLOCK_SIZE + 8192] = os.urandom(4096)  # mostly zeros
    data[9 * BLOCK_SIZE:10 * BLOCK_SIZE] = data[0:BLOCK_SIZE]  # a duplicate block
    with open(path, "wb") as f:
        f.truncate(size)
        for start, end in [(0, 3 * BLOCK_SIZE), (5 * BLOCK_SIZE + 4096, 5 * BLOCK_SIZE + 8192),
                           (9 * BLOCK_SIZE, 10 * BLOCK_SIZE)]:
            f.seek(start)
            f.write(data[start:end])
        f.seek(7 * BLOCK_SIZE)
        f.write(bytes(BLOCK_SIZE))  # written zeros: data as far as SEEK_DATA knows
    return bytes(data)


def _local(path: Path) -> LocalSource:
    return LocalSource.open(path.parent, "b", path.name)


def _read_all(store, manifest) -> bytes:
    return SnapshotReader(store, manifest).read()


def _flip_byte(store, ref, at: int, was: int) -> None:
    """Damage the stored block ``ref``: its byte ``at`` (``was`` before) changed."""
    with open(store.pack_path(ref), "r+b") as pack:
        pack.seek(ref.offset + at)
        pack.write(b"\x00" if was else b"\x01")


def _extents_of(source: LocalSource):
    return open_guest_disks(source, "raw", Limits())[0]


def test_deferred_ranges_are_read_by_the_writer_and_stored_exactly(tmp_path):
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    data = _disk(path)
    store = FileBlockStore(tmp_path / "store")
    with _local(path) as source:
        disk = _extents_of(source)
        extents = list(disk.extents())
        assert all(isinstance(d, FileRange) for _, d in extents)  # nothing read yet
        manifest = write_snapshot(store, disk.virtual_size, extents)
    # Zero blocks (holes and the written zeros) are not stored; the duplicate is stored once.
    assert sorted(manifest.blocks) == [0, 1, 2, 5, 9]
    assert manifest.blocks[9] == manifest.blocks[0]
    assert len(manifest.packs()) == 1
    assert _read_all(store, manifest) == data
    pack = store.pack_path(manifest.blocks[0])
    # Four distinct blocks in the pack; the partly-zero block's zeros are a hole, not written.
    assert pack.stat().st_size == 4 * BLOCK_SIZE
    assert pack.stat().st_blocks * 512 < 4 * BLOCK_SIZE


@pytest.mark.parametrize("deferred", [True, False], ids=["deferred", "bytes"])
def test_zero_stretches_inside_a_stored_block_are_holes_in_the_pack(tmp_path, deferred):
    """A block that is data, then 192 KiB of written zeros, then data is stored with the zeros
    left as a hole (qemu-img convert leaves them out too): it reads back whole, and the pack
    holds a hole exactly there. A zero stretch that is not a whole aligned 64 KiB is written."""
    K = 1024
    block = bytearray(os.urandom(BLOCK_SIZE))
    block[128 * K:320 * K] = bytes(192 * K)  # three whole 64 KiB chunks of zeros
    block[400 * K + 1:448 * K] = bytes(48 * K - 1)  # inside a chunk that holds data
    data = bytes(block) + os.urandom(BLOCK_SIZE)
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    path.write_bytes(data)  # written zeros: SEEK_DATA reports them as data
    store = FileBlockStore(tmp_path / "store")
    with _local(path) as source:
        extents = _extents_of(source).extents() if deferred else [(0, data)]
        manifest = write_snapshot(store, len(data), extents)
    assert _read_all(store, manifest) == data
    ref = manifest.blocks[0]
    fd = os.open(store.pack_path(ref), os.O_RDONLY)
    try:
        hole = os.lseek(fd, ref.offset, os.SEEK_HOLE)
        back = os.lseek(fd, hole, os.SEEK_DATA)
    finally:
        os.close(fd)
    assert (hole - ref.offset, back - ref.offset) == (128 * K, 320 * K)
    assert store.pack_path(ref).stat().st_blocks * 512 <= 2 * BLOCK_SIZE - 192 * K


def test_deferred_ranges_that_follow_each_other_are_read_in_one_call(tmp_path, monkeypatch):
    """A batch of blocks lying one after the other in the file is one preadv, not one per
    piece (each call gives up the GIL and waits to take it back)."""
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    data = os.urandom(8 * BLOCK_SIZE)
    path.write_bytes(data)
    calls = []
    real_preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, views, offset: calls.append(len(views))
                        or real_preadv(fd, views, offset))
    store = FileBlockStore(tmp_path / "store")
    with _local(path) as source:
        disk = _extents_of(source)
        manifest = write_snapshot(store, disk.virtual_size, disk.extents())
    assert _read_all(store, manifest) == data
    assert len(calls) == 1 and calls[0] >= 8, calls


def test_no_pack_write_crosses_a_write_call_window(tmp_path, monkeypatch):
    """Blocks are written in calls that stay inside one 256 KiB-aligned window of the pack
    (``sparse_writes.WRITE_CALL``): one 8 MiB pwritev gets 2 MiB page-cache folios, which on a VM with
    free page reporting come from memory the host has taken back (2-4x slower to fill)."""
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    data = os.urandom(8 * BLOCK_SIZE) + bytes(BLOCK_SIZE // 2) + os.urandom(BLOCK_SIZE // 2 + 4096)
    path.write_bytes(data)
    calls = []
    real_pwritev = os.pwritev
    monkeypatch.setattr(os, "pwritev", lambda fd, views, offset: calls.append(
        (offset, sum(len(v) for v in views))) or real_pwritev(fd, views, offset))
    store = FileBlockStore(tmp_path / "store")
    with _local(path) as source:
        disk = _extents_of(source)
        manifest = write_snapshot(store, disk.virtual_size, disk.extents())
    assert _read_all(store, manifest) == data
    assert sum(length for _, length in calls) == len(data) - BLOCK_SIZE // 2  # the zero half
    window = 256 * 1024
    assert all(offset // window == (offset + length - 1) // window for offset, length in calls)
    assert len(calls) <= len(data) // window + 2  # and no smaller than it need be


def test_the_snapshot_reader_reads_a_block_it_comes_back_to_once(tmp_path, monkeypatch):
    """Filesystem readers go back and forth between a few blocks (superblock, group
    descriptors, inode table): each is read from its pack and checked once, not per visit."""
    data = os.urandom(12 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    manifest = write_snapshot(store, len(data), [(0, data)])
    reads = []
    real = store.read_block
    monkeypatch.setattr(store, "read_block", lambda m, index, cipher=None: reads.append(index)
                        or real(m, index, cipher))
    reader = SnapshotReader(store, manifest)
    visits = [0, 3, 0, 7, 3, 0, 7, 1, 0, 3]  # 4 distinct blocks, 10 visits
    for index in visits:
        reader.seek(index * BLOCK_SIZE + 100)
        assert reader.read(1000) == data[index * BLOCK_SIZE + 100:index * BLOCK_SIZE + 1100]
    assert sorted(reads) == [0, 1, 3, 7]
    for index in range(12):  # a sequential pass reads each block once and keeps a few
        reader.seek(index * BLOCK_SIZE)
        assert reader.read(BLOCK_SIZE) == data[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]
    assert len(reader._cached) <= 8


def test_bytes_and_deferred_extents_give_the_same_snapshot(tmp_path):
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    data = _disk(path)
    deferred_store, bytes_store = FileBlockStore(tmp_path / "s1"), FileBlockStore(tmp_path / "s2")
    with _local(path) as source:
        disk = _extents_of(source)
        deferred = write_snapshot(deferred_store, disk.virtual_size, disk.extents())
    # Uneven byte extents that straddle blocks, against the same bytes read lazily.
    cuts = [0, 1000, BLOCK_SIZE + 17, 3 * BLOCK_SIZE, 6 * BLOCK_SIZE - 5, len(data)]
    plain = write_snapshot(bytes_store, len(data),
                           [(a, data[a:b]) for a, b in zip(cuts, cuts[1:])])
    assert {i: r.digest for i, r in deferred.blocks.items()} == \
        {i: r.digest for i, r in plain.blocks.items()}
    assert _read_all(bytes_store, plain) == _read_all(deferred_store, deferred) == data


def test_a_second_import_of_the_same_bytes_writes_no_pack(tmp_path):
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    data = _disk(path)
    store = FileBlockStore(tmp_path / "store")
    first = write_snapshot(store, len(data), [(0, data)])
    second = write_snapshot(store, len(data), [(0, data)])
    # Every block is one the first write stored (of twins it stored twice -- two threads
    # storing them at the same moment -- the index names one).
    assert second.blocks.keys() == first.blocks.keys()
    assert set(second.blocks.values()) <= set(first.blocks.values())
    assert {p.name for p in store.packs_dir.iterdir()} == first.packs()
    assert _read_all(store, second) == data
    assert second.shared_blocks == len(second.blocks) > 0  # the write says so
    assert first.shared_blocks < len(first.blocks)


@pytest.fixture
def batches_on_both_threads(monkeypatch) -> None:
    """Each batch of blocks waits, before it is stored, until another batch is being stored
    too: with two pool threads, consecutive batches go to different threads."""
    pair = threading.Barrier(2, timeout=10)
    put_blocks = PackWriter.put_blocks

    def paired(self, blocks):
        pair.wait()
        return put_blocks(self, blocks)

    monkeypatch.setattr(PackWriter, "put_blocks", paired)


def _in_batches(data: bytes, blocks: int) -> list[tuple[int, bytes]]:
    step = blocks * BLOCK_SIZE
    return [(at, data[at:at + step]) for at in range(0, len(data), step)]


def test_each_writing_thread_fills_a_pack_of_its_own(tmp_path, batches_on_both_threads):
    """Two threads writing one file take turns on its inode lock, so each pool thread appends
    to a pack of its own; all of them are published when the write succeeds."""
    data = os.urandom(8 * BLOCK_SIZE)  # two batches of four blocks (bytes extents)
    store = FileBlockStore(tmp_path / "store")
    manifest = write_snapshot(store, len(data), _in_batches(data, 4), threads=2)
    assert len(manifest.packs()) == 2
    assert {p.name for p in store.packs_dir.iterdir()} == manifest.packs()
    assert _read_all(store, manifest) == data
    # Both packs entered the dedup index: the same bytes again store nothing new.
    again = write_snapshot(store, len(data), _in_batches(data, 4), threads=2)
    assert again.blocks == manifest.blocks
    assert {p.name for p in store.packs_dir.iterdir()} == manifest.packs()


def test_a_failed_write_on_two_threads_leaves_no_pack_of_either(tmp_path, monkeypatch,
                                                                batches_on_both_threads):
    data = os.urandom(8 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    created = []
    open_pack = packs._PackFile.__init__

    def recorded(self, packs_dir):
        open_pack(self, packs_dir)
        created.append(self.partial)

    monkeypatch.setattr(packs._PackFile, "__init__", recorded)

    def fail_at_the_end(done):
        if done == len(data):  # after both batches were handed out
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_snapshot(store, len(data), _in_batches(data, 4), threads=2,
                       on_progress=fail_at_the_end)
    assert len(created) == 2  # both threads had begun a pack
    assert list(store.packs_dir.iterdir()) == []


@pytest.fixture
def slow_index(monkeypatch) -> threading.Event:
    """Recording a pack's blocks in the dedup index takes 0.3 s more; the event is set once
    it is done."""
    recorded = threading.Event()
    add = DedupIndex.add

    def slow_add(self, refs):
        time.sleep(0.3)
        add(self, refs)
        recorded.set()

    monkeypatch.setattr(DedupIndex, "add", slow_add)
    return recorded


def test_blocks_recorded_slowly_are_still_found_by_the_next_import(tmp_path, slow_index):
    """A finished pack's blocks enter the dedup index on a thread of their own (an import does
    not wait for it); the next pack writer of this process does, so dedup does not depend on
    that thread's speed."""
    recorded = slow_index
    data = os.urandom(4 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    first = write_snapshot(store, len(data), [(0, data)])
    assert not recorded.is_set()  # the import did not wait for the index
    second = write_snapshot(store, len(data), [(0, data)])
    assert recorded.is_set()
    assert second.blocks == first.blocks
    assert len(list(store.packs_dir.iterdir())) == 1


def test_blocks_enter_the_index_a_moment_after_the_write_or_when_someone_waits(tmp_path,
                                                                             monkeypatch):
    """Recorded at once, the index inserts shared the machine with the end of the import
    (manifest, inspection, AMI); they wait ``RECORD_DELAY``, unless wait_for_index (a new
    pack writer, gc) needs them sooner."""
    data = os.urandom(2 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    # An hour's delay: were wait_for_index to wait it out, the test would time out.
    monkeypatch.setattr(packs, "RECORD_DELAY", 3600)
    first = write_snapshot(store, len(data), [(0, data)])
    index = DedupIndex(store.index_path)
    try:
        assert index.find_many([first.blocks[0].digest]) == {}  # not yet
        wait_for_index()  # cut short, not waited out
        assert index.find_many([first.blocks[0].digest]) == {first.blocks[0].digest:
                                                             first.blocks[0]}
    finally:
        index.close()


def test_an_index_that_cannot_be_written_costs_dedup_not_the_import(tmp_path, monkeypatch,
                                                                    caplog):
    def add(self, refs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(DedupIndex, "add", add)
    data = os.urandom(2 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    manifest = write_snapshot(store, len(data), [(0, data)])
    wait_for_index()
    assert _read_all(store, manifest) == data
    assert "could not be added to the dedup index (database or disk is full)" in caplog.text
    monkeypatch.undo()
    again = write_snapshot(store, len(data), [(0, data)])  # stored again: nothing to share
    assert again.blocks[0].pack != manifest.blocks[0].pack
    assert _read_all(store, again) == data


def test_index_entries_of_a_pack_that_is_gone_are_not_used(tmp_path):
    """Entries recorded after `vmimport gc` deleted their pack (the recording of a failed
    import's pack runs on after the import ends, in its own process) must not send a new
    snapshot to blocks that are not there."""
    data = os.urandom(3 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    first = write_snapshot(store, len(data), [(0, data)])
    wait_for_index()
    (store.packs_dir / first.blocks[0].pack).unlink()  # what gc does to an unused pack
    second = write_snapshot(store, len(data), [(0, data)])
    assert second.blocks[0].pack != first.blocks[0].pack
    assert _read_all(store, second) == data


def test_garbage_collection_waits_for_the_index_of_a_pack_just_finished(tmp_path,
                                                                       slow_index):
    """gc forgets the entries of the packs it deletes; in one process it also waits for the
    entries still being recorded, so none of them outlives its pack."""
    recorded = slow_index
    data = os.urandom(2 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    first = write_snapshot(store, len(data), [(0, data)])  # no manifest: its pack is garbage
    assert store.collect_garbage(86400).packs_removed == 1
    assert recorded.is_set()
    index = DedupIndex(store.index_path)
    try:
        assert index.find_many([first.blocks[0].digest]) == {}
    finally:
        index.close()


def test_a_file_that_shrinks_under_a_deferred_read_fails_clearly(tmp_path):
    path = tmp_path / "b" / "disk.raw"
    path.parent.mkdir()
    _disk(path)
    store = FileBlockStore(tmp_path / "store")
    with _local(path) as source:
        disk = _extents_of(source)
        extents = list(disk.extents())
        os.truncate(path, BLOCK_SIZE + 100)
        with pytest.raises(ImportFailure, match="ended at byte 524388 but its size was "
                                                "16777216 bytes"):
            write_snapshot(store, disk.virtual_size, extents)
    # The failed write left no pack behind, finished or partial.
    assert list(store.packs_dir.iterdir()) == []


def test_progress_is_reported_all_through_a_sparse_disk(tmp_path):
    """Progress (where a cancel is noticed, too) comes every 16 blocks of the disk, holes
    included: a disk with data at none of the multiples of 16 still reports along the way."""
    size = 128 * BLOCK_SIZE
    extents = [((16 * i + 3) * BLOCK_SIZE, os.urandom(BLOCK_SIZE)) for i in range(8)]
    calls = []
    write_snapshot(FileBlockStore(tmp_path / "store"), size, extents, on_progress=calls.append)
    assert len(calls) >= 8 and calls == sorted(calls) and calls[-1] == size


def test_a_cancelled_write_leaves_no_pack_and_no_index_entries(tmp_path):
    data = os.urandom(8 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")

    def cancel(done):
        if done > 2 * BLOCK_SIZE:
            raise KeyboardInterrupt  # anything the progress callback raises

    with pytest.raises(KeyboardInterrupt):
        write_snapshot(store, len(data), [(0, data)], on_progress=cancel)
    assert list(store.packs_dir.iterdir()) == []
    # Nothing was recorded for dedup: the same bytes are stored in full next time.
    manifest = write_snapshot(store, len(data), [(0, data)])
    assert _read_all(store, manifest) == data


def test_damaged_or_missing_pack_is_an_error_not_data(tmp_path):
    data = os.urandom(2 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    manifest = write_snapshot(store, len(data), [(0, data)])
    ref = manifest.blocks[1]
    _flip_byte(store, ref, 7, data[BLOCK_SIZE + 7])
    assert store.read_block(manifest, 0) == data[:BLOCK_SIZE]
    with pytest.raises(BlockStoreError, match=f"block {ref.digest} is damaged"):
        store.read_block(manifest, 1)
    store.pack_path(ref).unlink()
    with pytest.raises(BlockStoreError, match="is missing from the block store"):
        store.read_block(manifest, 0)


def test_garbage_collection_keeps_packs_in_use_and_forgets_the_rest(tmp_path):
    store = FileBlockStore(tmp_path / "store")
    a, b = os.urandom(2 * BLOCK_SIZE), os.urandom(2 * BLOCK_SIZE)
    store.write_manifest("snap-a", write_snapshot(store, len(a), [(0, a)]))
    # snap-b shares a's first block and adds one of its own, in a pack of its own.
    mixed = a[:BLOCK_SIZE] + b[:BLOCK_SIZE]
    store.write_manifest("snap-b", manifest_b := write_snapshot(store, len(mixed), [(0, mixed)]))
    assert len(manifest_b.packs()) == 2
    store.delete_manifest("snap-a")
    report = store.collect_garbage(86400)
    assert report.packs_removed == 0  # a's pack still holds a block of b
    assert report.unreferenced_bytes_kept == BLOCK_SIZE  # a's second block
    assert _read_all(store, store.read_manifest("snap-b")) == mixed
    store.delete_manifest("snap-b")
    report = store.collect_garbage(86400)
    assert report.packs_removed == 2 and report.bytes_removed >= 3 * BLOCK_SIZE
    assert list(store.packs_dir.iterdir()) == []
    # The index forgot them too: the same bytes are written again, not referenced.
    again = write_snapshot(store, len(a), [(0, a)])
    assert _read_all(store, again) == a


@pytest.fixture
def colliding_fingerprints(monkeypatch) -> None:
    """Every block gets the same fingerprint: what a crafted image could do to xxh3 for a
    block it expects to be stored (xxh3 is no cryptographic hash)."""
    monkeypatch.setattr(packs, "digest_pieces", lambda pieces: "ab" * 16)
    monkeypatch.setattr(packs, "block_digest", lambda data: "ab" * 16)


def test_blocks_with_the_same_fingerprint_are_shared_only_if_their_bytes_are_equal(
        tmp_path, colliding_fingerprints):
    store = FileBlockStore(tmp_path / "store")
    a, b, c = (os.urandom(BLOCK_SIZE) for _ in range(3))
    first = write_snapshot(store, BLOCK_SIZE, [(0, a)])
    wait_for_index()
    # Against the index (another write), within one batch, and against an earlier batch of
    # the same write (its pack still partial), on one thread and then on two.
    data = b + c + b + a + c + b + a + b
    contents = [data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] for i in range(8)]
    for threads in (1, 2):
        second = write_snapshot(store, len(data), _in_batches(data, 4), threads=threads)
        assert _read_all(store, second) == data
        for i in range(8):  # blocks of different content never share a place
            assert all(second.blocks[i] != second.blocks[j]
                       for j in range(8) if contents[j] != contents[i])
            assert second.blocks[i] != first.blocks[0] or contents[i] == a
        if threads == 1:  # equal blocks still shared: in one batch, and batch to batch
            assert len({second.blocks[i] for i in (0, 2, 5, 7)}) == 1
    assert _read_all(store, first) == a


def test_a_crafted_block_under_a_fingerprint_does_not_keep_others_from_dedup(
        tmp_path, colliding_fingerprints):
    """Stored first, a block holding a popular block's fingerprint (xxh3 collisions can be
    crafted) would make every later copy of the popular block fail its byte compare; those go
    by their blake3 digest instead, and are shared again."""
    store = FileBlockStore(tmp_path / "store")
    crafted, popular = os.urandom(BLOCK_SIZE), os.urandom(BLOCK_SIZE)
    write_snapshot(store, BLOCK_SIZE, [(0, crafted)])
    first = write_snapshot(store, 2 * BLOCK_SIZE, [(0, popular), (BLOCK_SIZE, popular)])
    assert first.blocks[0] == first.blocks[1]  # within one batch
    later = [write_snapshot(store, BLOCK_SIZE, [(0, popular)]) for _ in range(2)]
    assert all(m.blocks[0] == first.blocks[0] for m in later)  # across writes, via the index
    packs_now = {p.name for p in store.packs_dir.iterdir()}
    assert len(packs_now) == 2  # the crafted block's and the popular block's: nothing more
    for manifest in (first, *later):
        assert _read_all(store, manifest) == popular * (manifest.size_bytes // BLOCK_SIZE)
    # The manifest keeps the fingerprint as every block's digest, as reads check it.
    assert first.blocks[0].digest == "ab" * 16
    store.write_manifest("snap", first)
    assert store.read_manifest("snap").blocks == first.blocks


def test_a_partly_zero_block_is_shared_with_its_twin_in_an_earlier_batch(tmp_path):
    """The twin is the last block of this write's partial pack, whose trailing zeros are not
    written yet (the file ends short of them): they still compare as zeros."""
    head = os.urandom(4096) + bytes(BLOCK_SIZE - 4096)
    data = os.urandom(3 * BLOCK_SIZE) + head + os.urandom(3 * BLOCK_SIZE) + head
    store = FileBlockStore(tmp_path / "store")
    manifest = write_snapshot(store, len(data), _in_batches(data, 4), threads=1)
    assert manifest.blocks[7] == manifest.blocks[3]
    assert _read_all(store, manifest) == data


def test_manifests_with_the_blake3_digests_of_older_versions_are_still_read_and_checked(
        tmp_path):
    import blake3

    data = os.urandom(2 * BLOCK_SIZE)
    store = FileBlockStore(tmp_path / "store")
    manifest = write_snapshot(store, len(data), [(0, data)])
    assert store.write_manifest("snap-new", manifest) is None
    assert (store.manifests_dir / "snap-new").read_bytes()[:8] == b"VMIMAN05"
    old = Manifest(size_bytes=len(data), blocks={
        i: BlockRef(blake3.blake3(data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]).hexdigest(),
                    ref.pack, ref.offset, ref.length) for i, ref in manifest.blocks.items()})
    store.write_manifest("snap-old", old)
    assert (store.manifests_dir / "snap-old").read_bytes()[:8] == b"VMIMAN03"
    assert _read_all(store, store.read_manifest("snap-old")) == data
    ref = old.blocks[1]
    _flip_byte(store, ref, 9, data[BLOCK_SIZE + 9])
    with pytest.raises(BlockStoreError, match=f"block {ref.digest} is damaged"):
        store.read_block(store.read_manifest("snap-old"), 1)
    with pytest.raises(ValueError, match="digests of one kind"):
        Manifest(size_bytes=len(data), blocks={0: old.blocks[0], 1: manifest.blocks[1]}
                 ).to_bytes()


def test_manifest_of_an_older_layout_is_refused_by_name(tmp_path):
    store = FileBlockStore(tmp_path)
    (store.manifests_dir / "snap-old").write_bytes(b"VMIMAN01" + bytes(32))
    with pytest.raises(BlockStoreError, match="written by an older vmimport"):
        store.read_manifest("snap-old")
    with pytest.raises(BlockStoreError, match="damaged"):
        # One block announced, none present.
        Manifest.from_bytes(b"VMIMAN03" + bytes(12) + (1).to_bytes(8, "little") + bytes(4))


def test_qemu_images_through_deferred_ranges_match_qemu(tmp_path):
    """Fixed and dynamic VHD, VHDX, monolithicSparse VMDK and qcow2 rendered by qemu-img, read
    from a real local file (plain data deferred to the writer, holes skipped): the snapshot
    equals qemu's raw."""
    bucket = tmp_path / "b"
    bucket.mkdir()
    raw = bucket / "disk.raw"
    data = _disk(raw, 8 * MiB)
    expected = hashlib.sha256(data).hexdigest()
    for fmt, options, declared in [("vpc", "subformat=fixed,force_size=on", "vhd"),
                                   ("vpc", "subformat=dynamic,force_size=on", "vhd"),
                                   ("vhdx", "", "vhdx"),
                                   ("vmdk", "subformat=monolithicSparse", "vmdk"),
                                   ("qcow2", "", "qcow2")]:
        image = bucket / f"disk.{fmt}.{len(options)}"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt,
                        *(["-o", options] if options else []), str(raw), str(image)],
                       check=True, capture_output=True)
        store = FileBlockStore(tmp_path / f"store-{image.name}")
        with _local(image) as source:
            disk = open_guest_disks(source, declared, Limits())[0]
            pieces = list(disk.extents())
            assert any(isinstance(d, FileRange) for _, d in pieces), fmt
            manifest = write_snapshot(store, disk.virtual_size, pieces)
        got = _read_all(store, manifest)[:len(data)]
        assert hashlib.sha256(got).hexdigest() == expected, fmt


@pytest.mark.parametrize("fmt,declared", [("vhdx", "vhdx"), ("vpc", "vhd"), ("raw", "raw")])
def test_a_sparse_image_cut_short_during_the_import_fails_rather_than_reading_zeros(
        tmp_path, fmt, declared):
    """Holes are skipped, but past a file's new end SEEK_DATA finds no data either: a file
    truncated after it was opened must fail the import, not turn into zeros."""
    bucket = tmp_path / "b"
    bucket.mkdir()
    raw = bucket / "disk.raw"
    _disk(raw, 8 * MiB)
    image = bucket / f"disk.{fmt}"
    if fmt != "raw":
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(image)],
                       check=True, capture_output=True)
    store = FileBlockStore(tmp_path / "store")
    with _local(image) as source:
        disk = open_guest_disks(source, declared, Limits())[0]
        os.truncate(image, BLOCK_SIZE)
        with pytest.raises(ImportFailure, match="shrank while it was|ended at byte|ends at byte"):
            write_snapshot(store, disk.virtual_size, disk.extents())
