"""Compaction on both backends: a pack that manifests use little of has its live blocks moved
into a new pack, the manifests using them rewritten, and a later gc run reclaims it; snapshots
read back byte for byte throughout, encrypted ones too; a damaged block or a write in flight
holding the pack leaves it where it is. The object store against SeaweedFS with its index in
the database (PostgreSQL when VMIMPORT_TEST_POSTGRES_URL names one, else SQLite)."""

from __future__ import annotations

import os
import time

import pytest

from vmimport.blockstore.backends import open_block_store
from vmimport.blockstore.compaction import MIN_DEAD_BYTES
from vmimport.blockstore.crypto import BlockCipher
from vmimport.blockstore.file_store import FileBlockStore
from vmimport.blockstore.manifest import BLOCK_SIZE, Manifest, ManifestEncryption
from vmimport.blockstore.reader import SnapshotReader
from vmimport.blockstore.writer import write_snapshot
from vmimport.config import Settings
from vmimport.db.session import Database

from .object_bucket import BUCKET

MiB = 1024 * 1024
BLOCKS = 2 * MIN_DEAD_BYTES // BLOCK_SIZE  # the first snapshot's blocks: 16 MiB
SHARED = BLOCKS // 4  # of them, what the second snapshot shares: the pack is 25% live
GRACE = 2.0  # seconds (the object store keeps a compacted pack this long)


@pytest.fixture(params=["file", "object"])
def store(request, tmp_path):
    if request.param == "file":
        yield FileBlockStore(tmp_path / "store")
        return
    s3 = request.getfixturevalue("s3")
    settings = Settings(data_dir=tmp_path, blocks_url=f"s3://{BUCKET}/{request.node.name}/",
                        blocks_s3_endpoint_url=s3.endpoint_url,
                        blocks_s3_access_key=s3.access_key, blocks_s3_secret_key=s3.secret_key,
                        database_url=os.environ.get("VMIMPORT_TEST_POSTGRES_URL", ""))
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    yield open_block_store(settings, check=True)
    db.dispose()


def _gc(store, **extra):
    return store.collect_garbage(GRACE, **extra)


def _after_the_grace():
    time.sleep(GRACE + 1)


def _read(store, snapshot_id: str, cipher=None) -> bytes:
    return SnapshotReader(store, store.read_manifest(snapshot_id), cipher).read()


def _sparse_pack(store) -> tuple[bytes, str]:
    """snap-a's blocks in one pack, snap-b sharing a quarter of them (and one of its own),
    snap-a deleted: the pack is 25% live. Returns snap-b's bytes and the sparse pack."""
    a = os.urandom(BLOCKS * BLOCK_SIZE)
    with store.pack_writer() as writer:  # one thread: one pack
        refs = writer.put_blocks([[(0, memoryview(a)[n * BLOCK_SIZE:(n + 1) * BLOCK_SIZE])]
                                  for n in range(BLOCKS)])
    first = Manifest(len(a), dict(enumerate(refs)))
    store.write_manifest("snap-a", first)
    (pack,) = first.packs()
    b = a[:SHARED * BLOCK_SIZE] + os.urandom(BLOCK_SIZE)
    second = write_snapshot(store, len(b), [(0, b)])
    store.write_manifest("snap-b", second)
    assert second.shared_blocks == SHARED and pack in second.packs()
    store.delete_manifest("snap-a")
    return b, pack


def _packs_of(store) -> set[str]:
    if isinstance(store, FileBlockStore):
        return {p.name for p in store.packs_dir.iterdir() if not p.name.startswith(".")}
    return {name for name, _ in store._list("packs", "listing")}


def test_a_sparse_pack_is_compacted_and_reclaimed_by_a_later_run(store):
    b, pack = _sparse_pack(store)
    _after_the_grace()
    assert _gc(store).compaction.packs == 0  # compaction is asked for, never assumed
    report = _gc(store, compact_below=0.5)
    assert report.packs_removed == 0
    assert report.compaction.packs == 1 and report.compaction.manifests_rewritten == 1
    assert report.compaction.bytes_moved == SHARED * BLOCK_SIZE
    assert report.compaction.bytes_to_reclaim >= BLOCKS * BLOCK_SIZE
    moved = store.read_manifest("snap-b")
    assert pack not in moved.packs()
    assert _read(store, "snap-b") == b
    # A reader or copy that read the old manifest may still use the pack: it stays the grace.
    assert _gc(store, compact_below=0.5).packs_removed == 0
    assert pack in _packs_of(store)
    _after_the_grace()
    later = _gc(store, compact_below=0.5)
    assert later.packs_removed == 1 and later.bytes_removed >= BLOCKS * BLOCK_SIZE
    assert later.compaction.packs == 0  # the new pack is dense
    assert pack not in _packs_of(store)
    assert _read(store, "snap-b") == b
    # Dedup finds the moved blocks at their new place, not the reclaimed pack.
    again = write_snapshot(store, SHARED * BLOCK_SIZE, [(0, b[:SHARED * BLOCK_SIZE])])
    assert again.shared_blocks == SHARED and again.packs() <= moved.packs()


def test_a_pack_used_more_than_the_threshold_stays(store):
    _, pack = _sparse_pack(store)
    _after_the_grace()
    report = _gc(store, compact_below=0.2)  # 25% is in use
    assert report.compaction.packs == 0 and pack in store.read_manifest("snap-b").packs()
    assert report.unreferenced_bytes_kept >= (BLOCKS - SHARED) * BLOCK_SIZE


def test_sealed_blocks_are_moved_as_they_are_and_still_open(store):
    """Two encrypted snapshots written together (as a re-sealing copy of a two-volume image
    does) share a pack; one is deleted. The other's blocks move sealed and open as before."""
    key = os.urandom(32)
    wanted = {}
    with store.pack_writer(dedup=False) as sink:
        for snapshot_id, count in (("snap-gone", BLOCKS), ("snap-kept", SHARED)):
            cipher = BlockCipher(key, snapshot_id)
            data = os.urandom(count * BLOCK_SIZE)
            blocks = {n: sink.put(cipher.seal_block(n, data[n * BLOCK_SIZE:(n + 1) * BLOCK_SIZE]))
                      for n in range(count)}
            wanted[snapshot_id] = (Manifest(len(data), blocks, encryption=ManifestEncryption(
                snapshot_id, "arn:aws:kms:us-east-1:000000000000:key/k", b"wrapped")), data)
    for snapshot_id, (manifest, _) in wanted.items():
        store.write_manifest(snapshot_id, manifest)
    store.delete_manifest("snap-gone")
    _after_the_grace()
    report = _gc(store, compact_below=0.5)
    assert report.compaction.packs == 1
    kept = store.read_manifest("snap-kept")
    assert kept.packs().isdisjoint(wanted["snap-kept"][0].packs())
    assert kept.encryption == wanted["snap-kept"][0].encryption
    assert _read(store, "snap-kept", BlockCipher(key, "snap-kept")) == wanted["snap-kept"][1]


def test_a_damaged_block_leaves_its_pack_as_it_was(store):
    b, pack = _sparse_pack(store)
    ref = next(r for r in store.read_manifest("snap-b").blocks.values() if r.pack == pack)
    if isinstance(store, FileBlockStore):
        with open(store.pack_path(ref), "r+b") as f:
            f.seek(ref.offset + 100)
            was = f.read(1)[0]
            f.seek(ref.offset + 100)
            f.write(bytes([was ^ 1]))
    else:
        key = store._where.key("packs", pack)
        body = bytearray(store._client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        body[ref.offset + 100] ^= 1
        store._client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
        store._cache.clear()
    _after_the_grace()
    report = _gc(store, compact_below=0.5)
    assert report.compaction.packs == 0 and report.compaction.damaged == (pack,)
    assert pack in store.read_manifest("snap-b").packs()


@pytest.mark.parametrize("store", ["object"], indirect=True)  # the file store's gc runs only
def test_a_pack_a_write_in_flight_reuses_is_not_compacted(store):  # while no import does
    b, pack = _sparse_pack(store)
    _after_the_grace()
    with store.pack_writer() as writer:  # an import on another machine, still running
        refs = writer.put_blocks([[(0, memoryview(b)[:BLOCK_SIZE])]])
        assert refs[0].pack == pack
        report = _gc(store, compact_below=0.5)
        assert report.compaction.packs == 0
    assert pack in store.read_manifest("snap-b").packs()
    assert _read(store, "snap-b") == b


def test_manifests_are_listed_by_when_they_were_written(store):
    """What gc's orphan sweep asks of either store (``jobs.gc.remove_orphan_manifests``)."""
    import time

    store.write_manifest("snap-listed", Manifest(0, {}))
    assert "snap-listed" in store.manifests_written_before(time.time() + 60)
    assert "snap-listed" not in store.manifests_written_before(time.time() - 3600)
    store.delete_manifest("snap-listed")
    assert "snap-listed" not in store.manifests_written_before(time.time() + 60)
