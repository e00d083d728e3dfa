"""The object-store block store against a real S3-compatible server (SeaweedFS): snapshots
written and read back exactly, manifests as objects, damage and absence named, encryption,
garbage collection and abandoned uploads."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from vmimport.blockstore import object_packs
from vmimport.blockstore.backends import BlockStoreUnavailable, open_block_store
from vmimport.blockstore.crypto import BlockCipher
from vmimport.blockstore.manifest import BLOCK_SIZE, BlockStoreError, ManifestEncryption
from vmimport.blockstore.object_client import ObjectStoreError
from vmimport.blockstore.object_store import ObjectBlockStore
from vmimport.blockstore.reader import SnapshotReader
from vmimport.blockstore.writer import write_snapshot
from vmimport.config import Settings
from vmimport.db.session import Database
from vmimport.pipeline.formats import open_guest_disks
from vmimport.pipeline.formats.base import Limits
from vmimport.pipeline.source import LocalSource

from ..helpers import make_raw_disk
from ..s3server import S3Server
from .object_bucket import BUCKET

MiB = 1024 * 1024


def _settings(s3, tmp_path: Path, prefix: str, **extra) -> Settings:
    return Settings(**{"data_dir": tmp_path, "blocks_url": f"s3://{BUCKET}/{prefix}/",
                       "blocks_s3_endpoint_url": s3.endpoint_url,
                       "blocks_s3_access_key": s3.access_key,
                       "blocks_s3_secret_key": s3.secret_key, **extra})


@pytest.fixture
def store(s3, tmp_path, request) -> ObjectBlockStore:
    settings = _settings(s3, tmp_path, request.node.name)
    Database(settings.sqlalchemy_url).migrate()  # the dedup index and pack holds
    opened = open_block_store(settings, check=True)
    assert isinstance(opened, ObjectBlockStore)
    return opened


def _keys(s3, folder: str, prefix: str) -> set[str]:
    start = f"{prefix}/{folder}/"
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=start)
    return {o["Key"][len(start):] for page in pages for o in page.get("Contents", [])}


def test_a_qemu_made_disk_is_stored_in_parts_and_reads_back_exactly(s3, store, tmp_path,
                                                                     monkeypatch, request):
    """A qcow2 disk rendered by qemu-img, bigger than a part: every block reads back as
    qemu's raw; the manifest round-trips through its object."""
    monkeypatch.setattr(object_packs, "PACK_PARTS", 2)  # also roll over to further packs
    bucket = tmp_path / "b"
    bucket.mkdir()
    raw = make_raw_disk(bucket / "disk.raw", 40 * MiB, seed=3, data_fraction=0.6)
    image = bucket / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)],
                   check=True, capture_output=True)
    with LocalSource.open(bucket, "b", "disk.qcow2") as source:
        disk = open_guest_disks(source, "qcow2", Limits())[0]
        manifest = write_snapshot(store, disk.virtual_size, disk.extents())
    assert len(manifest.packs()) > 2  # two writing threads, packs of two parts each
    store.write_manifest("snap-1", manifest)
    again = store.read_manifest("snap-1")
    assert again == manifest and store.has_manifest("snap-1")
    expected = raw.read_bytes()
    for index in range(again.block_count):
        assert store.read_block(again, index) == expected[index * BLOCK_SIZE:
                                                          (index + 1) * BLOCK_SIZE], index
    assert hashlib.sha256(SnapshotReader(store, again).read()).digest() == \
        hashlib.sha256(expected).digest()
    name = request.node.name
    assert _keys(s3, "packs", name) == manifest.packs()
    assert _keys(s3, "uploads", name) == set()  # every upload finished, its marker gone
    store.delete_manifest("snap-1")
    assert not store.has_manifest("snap-1")
    with pytest.raises(BlockStoreError, match="snap-1 has no manifest"):
        store.read_manifest("snap-1")


def test_missing_or_damaged_objects_are_named(s3, store, request):
    data = os.urandom(2 * BLOCK_SIZE)
    manifest = write_snapshot(store, len(data), [(0, data)])
    store.write_manifest("snap-2", manifest)
    prefix = request.node.name
    first, second = manifest.blocks[0], manifest.blocks[1]
    client = s3.client()
    # Damaged: the pack rewritten with one byte changed (and the cache of checked blocks
    # bypassed by a store of its own).
    for ref in (first, second):
        key = f"{prefix}/packs/{ref.pack}"
        body = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        body[ref.offset + 7] ^= 1
        client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    fresh = ObjectBlockStore(store._client, store._where)
    with pytest.raises(BlockStoreError, match=f"block {first.digest} is damaged"):
        fresh.read_block(manifest, 0)
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/packs/{second.pack}")
    with pytest.raises(BlockStoreError, match=f"pack {second.pack} is gone from s3://{BUCKET}/"):
        fresh.read_block(manifest, 1)
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/manifests/snap-3", Body=b"VMIMAN05garbage")
    with pytest.raises(BlockStoreError, match="manifest"):
        store.read_manifest("snap-3")


def test_an_unreachable_store_or_missing_bucket_is_an_error_naming_it(s3, tmp_path):
    with pytest.raises(BlockStoreUnavailable, match=f"s3://absent/x/ at {s3.endpoint_url}.*"
                                                    "(NoSuchBucket|404)"):
        open_block_store(_settings(s3, tmp_path, "x", blocks_url="s3://absent/x/"), check=True)
    with pytest.raises(BlockStoreUnavailable, match=f"s3://{BUCKET}/x/ at .*(403|Denied)"):
        open_block_store(_settings(s3, tmp_path, "x", blocks_s3_secret_key="wrong"), check=True)
    closed = S3Server(tmp_path / "closed")  # never started: nothing listens on its port
    store = open_block_store(_settings(s3, tmp_path, "x",
                                       blocks_s3_endpoint_url=closed.endpoint_url))
    _one_attempt(store)
    with pytest.raises(ObjectStoreError, match=f"s3://{BUCKET}/x/ at {closed.endpoint_url}: "
                                               "reading the manifest of snap-9 failed"):
        store.read_manifest("snap-9")


def _one_attempt(store: ObjectBlockStore) -> None:
    """Connection failures are retried with backoff (up to tens of seconds): one try here."""
    store._client.meta.config.retries["total_max_attempts"] = 1


def test_encrypted_snapshots_seal_every_block_and_read_back(s3, store, request):
    snapshot_id = "snap-0123456789abcdef0"
    marker = b"PLAINTEXT-MARKER-0123456789" * 100
    data = bytearray(3 * BLOCK_SIZE + 1000)
    data[10:10 + len(marker)] = marker
    data[2 * BLOCK_SIZE:2 * BLOCK_SIZE + len(marker)] = marker
    key = os.urandom(32)
    record = ManifestEncryption(snapshot_id, "arn:aws:kms:us-east-1:000000000000:key/k", b"w")
    manifest = write_snapshot(store, len(data), [(0, bytes(data))],
                              cipher=BlockCipher(key, snapshot_id), encryption=record)
    store.write_manifest(snapshot_id, manifest)
    assert sorted(manifest.blocks) == [0, 2]
    client = s3.client()
    for name in _keys(s3, "packs", request.node.name):
        body = client.get_object(Bucket=BUCKET, Key=f"{request.node.name}/packs/{name}")
        assert b"PLAINTEXT-MARKER" not in body["Body"].read()
    again = store.read_manifest(snapshot_id)
    assert again.encryption == record
    assert SnapshotReader(store, again, BlockCipher(key, snapshot_id)).read() == bytes(data)
    with pytest.raises(BlockStoreError, match="failed its integrity check"):
        store.read_block(again, 0, BlockCipher(os.urandom(32), snapshot_id))


def test_gc_keeps_referenced_packs_deletes_the_others_and_aborts_dead_uploads(s3, store,
                                                                           request):
    prefix = request.node.name
    kept = write_snapshot(store, BLOCK_SIZE, [(0, os.urandom(BLOCK_SIZE))])
    store.write_manifest("snap-kept", kept)
    dropped = write_snapshot(store, 2 * BLOCK_SIZE, [(0, os.urandom(2 * BLOCK_SIZE))])
    store.write_manifest("snap-dropped", dropped)
    store.delete_manifest("snap-dropped")
    # A write that died mid-upload: its multipart upload open, its marker naming a process
    # of this host that is gone; and one of another host, within the grace period.
    dead = object_packs._PackUpload(store._client, store._where)
    dead.append([(0, memoryview(os.urandom(BLOCK_SIZE)))], BLOCK_SIZE)
    dead._upload_part()
    client = s3.client()
    dead_marker = f"{prefix}/uploads/{dead.name}-{_dead_pid()}@{os.uname().nodename}"
    client.copy_object(Bucket=BUCKET, Key=dead_marker,
                       CopySource={"Bucket": BUCKET, "Key": dead.marker})
    client.delete_object(Bucket=BUCKET, Key=dead.marker)
    other = object_packs._PackUpload(store._client, store._where)
    other_marker = f"{prefix}/uploads/{other.name}-123@elsewhere"
    client.copy_object(Bucket=BUCKET, Key=other_marker,
                       CopySource={"Bucket": BUCKET, "Key": other.marker})
    client.delete_object(Bucket=BUCKET, Key=other.marker)

    own = store.reclaim_own_leftovers()
    assert (own.removed, own.bytes_removed) == (1, BLOCK_SIZE)
    assert _open_uploads(s3, prefix) == {other.name}

    young = store.collect_garbage(leftover_grace_seconds=3600)
    assert young.packs_removed == 0 and _keys(s3, "packs", prefix) == kept.packs() | \
        dropped.packs()
    report = store.collect_garbage(leftover_grace_seconds=0)
    assert report.packs_removed == len(dropped.packs())
    assert report.bytes_removed == 2 * BLOCK_SIZE
    assert report.leftovers.removed == 1  # the other host's upload, now past the grace
    assert _keys(s3, "packs", prefix) == kept.packs()
    assert _keys(s3, "uploads", prefix) == set() and _open_uploads(s3, prefix) == set()
    assert store.read_block(store.read_manifest("snap-kept"), 0) == \
        store.read_block(kept, 0)


def test_a_failed_write_leaves_no_pack_or_upload(s3, store, request):
    class Boom(Exception):
        pass

    def extents():
        yield 0, os.urandom(20 * BLOCK_SIZE)  # more than a part: one is uploaded already
        raise Boom

    with pytest.raises(Boom):
        write_snapshot(store, 40 * BLOCK_SIZE, extents())
    prefix = request.node.name
    assert _keys(s3, "packs", prefix) == set() and _keys(s3, "uploads", prefix) == set()
    assert _open_uploads(s3, prefix) == set()


def _open_uploads(s3, prefix: str) -> set[str]:
    uploads = s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/packs/")
    return {u["Key"].rsplit("/", 1)[1] for u in uploads.get("Uploads", [])}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
