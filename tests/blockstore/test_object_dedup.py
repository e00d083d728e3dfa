"""Dedup on the object-store block store through the index in the database, which processes on
every machine share: a block stored by one process is reused by another only once its bytes
compare equal; gc, while a write holds a pack, leaves it alone, and reclaims it (and its index
entries) once nothing holds or references it. Against SeaweedFS, and PostgreSQL when
VMIMPORT_TEST_POSTGRES_URL names one (else the SQLite database)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from sqlalchemy import text

from vmimport.blockstore.backends import open_block_store
from vmimport.blockstore.manifest import BLOCK_SIZE
from vmimport.blockstore.object_store import ObjectBlockStore
from vmimport.blockstore.writer import write_snapshot
from vmimport.config import Settings
from vmimport.db.session import Database
from vmimport.pipeline.formats import open_guest_disks
from vmimport.pipeline.formats.base import Limits
from vmimport.pipeline.source import LocalSource

from ..helpers import make_raw_disk
from .object_bucket import BUCKET

MiB = 1024 * 1024


def _settings(s3, data_dir, prefix: str) -> Settings:
    return Settings(data_dir=data_dir, blocks_url=f"s3://{BUCKET}/{prefix}/",
                    blocks_s3_endpoint_url=s3.endpoint_url, blocks_s3_access_key=s3.access_key,
                    blocks_s3_secret_key=s3.secret_key,
                    database_url=os.environ.get("VMIMPORT_TEST_POSTGRES_URL", ""))


@pytest.fixture
def two_machines(s3, tmp_path, request):
    """Two stores as two processes on two machines open them: separate data dirs, separate
    database engines, one bucket prefix and one database (SQLite in the first's data dir
    unless PostgreSQL is given)."""
    first = _settings(s3, tmp_path / "m1", request.node.name)
    first.data_dir.mkdir()
    (tmp_path / "m2").mkdir()
    second = _settings(s3, tmp_path / "m2", request.node.name)
    second = second.model_copy(update={"database_url": first.sqlalchemy_url})
    db = Database(first.sqlalchemy_url)
    db.migrate()
    stores = [open_block_store(first, check=True), open_block_store(second, check=True)]
    assert all(isinstance(s, ObjectBlockStore) for s in stores)
    yield stores[0], stores[1], db
    db.dispose()


def _packs(s3, prefix: str) -> dict[str, int]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                  Prefix=f"{prefix}/packs/")
    return {o["Key"].rsplit("/", 1)[1]: o["Size"] for p in pages for o in p.get("Contents", [])}


def _qemu_disk(tmp_path):
    """A qcow2 disk made by qemu-img from random data (60% of its 16 MiB), and its raw."""
    (tmp_path / "b").mkdir()
    raw = make_raw_disk(tmp_path / "b" / "disk.raw", 16 * MiB, seed=7, data_fraction=0.6)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                    str(tmp_path / "b" / "disk.qcow2")], check=True, capture_output=True)
    return raw


def _import(store, tmp_path):
    with LocalSource.open(tmp_path / "b", "b", "disk.qcow2") as source:
        disk = open_guest_disks(source, "qcow2", Limits())[0]
        return write_snapshot(store, disk.virtual_size, disk.extents())


def test_a_disk_imported_on_another_machine_is_stored_once(s3, two_machines, tmp_path, request):
    first, second, _ = two_machines
    raw = _qemu_disk(tmp_path)
    one = _import(first, tmp_path)
    first.write_manifest("snap-one", one)
    stored = _packs(s3, request.node.name)
    two = _import(second, tmp_path)
    second.write_manifest("snap-two", two)
    assert _packs(s3, request.node.name) == stored  # not one more byte stored
    assert two.blocks == one.blocks and len(two.blocks) > 10
    assert two.shared_blocks == len(two.blocks) and one.shared_blocks == 0
    expected = raw.read_bytes()
    again = first.read_manifest("snap-two")
    for index in range(len(expected) // BLOCK_SIZE):
        assert first.read_block(again, index) == \
            expected[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]


def test_a_fingerprint_that_names_other_bytes_is_not_reused(s3, two_machines, request):
    """An index entry whose block holds other bytes (as a crafted collision would make): the
    block is compared, found different and stored again; it reads back as itself."""
    first, second, db = two_machines
    theirs = write_snapshot(first, BLOCK_SIZE, [(0, os.urandom(BLOCK_SIZE))])
    mine = os.urandom(BLOCK_SIZE)
    from vmimport.blockstore.packs import block_digest
    planted = theirs.blocks[0]
    with db.write() as session:
        session.execute(text("UPDATE block_index SET digest = :mine WHERE digest = :theirs"),
                        {"mine": block_digest(mine), "theirs": planted.digest})
    written = write_snapshot(second, BLOCK_SIZE, [(0, mine)])
    assert written.blocks[0].pack != planted.pack
    assert second.read_block(written, 0) == mine


def test_gc_during_an_import_keeps_the_packs_it_reuses(s3, two_machines, request):
    """A snapshot deleted, then its blocks reused by a write still running on the other
    machine when gc runs (past the grace): the pack stays, and the new snapshot reads back.
    Once nothing references or holds it, gc takes it and its index entries."""
    first, second, db = two_machines
    data = os.urandom(4 * BLOCK_SIZE)
    old = write_snapshot(first, len(data), [(0, data)])
    first.write_manifest("snap-old", old)
    first.delete_manifest("snap-old")
    grace = 5
    time.sleep(grace + 1)  # the pack and its hold are older than the grace now
    writer = second.pack_writer()
    with writer:
        refs = writer.put_blocks([[(0, memoryview(data)[n * BLOCK_SIZE:(n + 1) * BLOCK_SIZE])]
                                  for n in range(4)])
        assert [r.pack for r in refs] == [b.pack for b in old.blocks.values()]
        report = first.collect_garbage(grace)  # the import is in flight
        assert report.packs_removed == 0
    assert set(_packs(s3, request.node.name)) == old.packs()
    second.write_manifest("snap-new", old)
    assert b"".join(first.read_block(old, n) for n in range(4)) == data

    second.delete_manifest("snap-new")
    time.sleep(grace + 1)
    report = first.collect_garbage(grace)
    assert report.packs_removed == len(old.packs()) and _packs(s3, request.node.name) == {}
    with db.read() as session:
        left = session.execute(text("SELECT count(*) FROM block_index WHERE pack = :p"),
                               {"p": next(iter(old.packs()))}).scalar()
    assert left == 0
    fresh = write_snapshot(second, len(data), [(0, data)])  # stored again, not reused
    assert fresh.packs().isdisjoint(old.packs())
    assert b"".join(second.read_block(fresh, n) for n in range(4)) == data


def test_twins_within_one_volume_are_stored_once(s3, two_machines, request):
    """The same 512 KiB at blocks 0, 5 and 40 (another batch) of one volume: stored once,
    although the pack is not readable until the write completes (blake3 decides)."""
    first, _, _ = two_machines
    twin, other = os.urandom(BLOCK_SIZE), os.urandom(BLOCK_SIZE)
    data = bytearray(48 * BLOCK_SIZE)
    for index in (0, 5, 40):
        data[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE] = twin
    data[7 * BLOCK_SIZE:8 * BLOCK_SIZE] = other
    manifest = write_snapshot(first, len(data), [(0, bytes(data))])
    assert manifest.blocks[0] == manifest.blocks[5] == manifest.blocks[40]
    assert manifest.shared_blocks == 2
    assert sum(_packs(s3, request.node.name).values()) == 2 * BLOCK_SIZE
    assert b"".join(first.read_block(manifest, n) for n in range(48)) == bytes(data)


def test_twins_by_fingerprint_only_are_both_stored(s3, two_machines, monkeypatch,
                                                    request):
    """Two different blocks under one fingerprint (a crafted collision) in one volume: the
    blake3 digests differ, so each is stored and reads back as itself."""
    from vmimport.blockstore import object_packs
    first, _, _ = two_machines
    monkeypatch.setattr(object_packs, "digest_pieces", lambda pieces: "ab" * 16)
    one, two = os.urandom(BLOCK_SIZE), os.urandom(BLOCK_SIZE)
    writer = first.pack_writer()
    with writer:
        refs = writer.put_blocks([[(0, memoryview(one))], [(0, memoryview(two))]])
    assert refs[0].offset != refs[1].offset and writer.blocks_written == 2
    for ref, data in zip(refs, (one, two)):  # the raw bytes: the faked fingerprint fails reads
        got = s3.client().get_object(Bucket=BUCKET, Key=f"{request.node.name}/packs/{ref.pack}",
                                     Range=f"bytes={ref.offset}-{ref.offset + ref.length - 1}")
        assert got["Body"].read() == data
