"""A full disk under the block store ends an import saying so, naming the store (issue 16 item
7), instead of "internal error while importing (OSError)". The disk is really full: a 16 MiB
tmpfs mounted for the test (root only; skipped, saying why, where mounting is refused)."""

from __future__ import annotations

import os
import subprocess

import pytest

from vmimport.blockstore.file_store import BLOCK_SIZE, FileBlockStore
from vmimport.blockstore.interface import BlockStoreFull
from vmimport.blockstore.writer import write_snapshot
from vmimport.db.session import Database

from ..helpers import Server, wait_task

TMPFS_BYTES = 16 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a 16 MiB filesystem of its own, unmounted afterwards whatever happens."""
    mount = tmp_path / "small"
    mount.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                          str(mount)], capture_output=True, text=True)
    if run.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {run.stderr.strip()}")
    assert run.returncode == 0, f"mounting a tmpfs as root failed: {run.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_writing_past_the_end_of_the_disk_is_block_store_full(small_disk):
    store = FileBlockStore(small_disk / "blocks")
    extents = [(n * BLOCK_SIZE, os.urandom(BLOCK_SIZE)) for n in range(48)]  # 24 MiB
    with pytest.raises(BlockStoreFull) as err:
        write_snapshot(store, 48 * BLOCK_SIZE, extents)
    assert str(err.value) == f"no space left in the block store ({small_disk / 'blocks'})"
    assert list(store.packs_dir.iterdir()) == []  # the failed write's packs are gone


def test_an_import_into_a_full_block_store_says_so(tmp_path, small_disk):
    blocks = small_disk / "blocks"
    server = Server(tmp_path / "data", env={"VMIMPORT_BLOCKS_URL": f"file://{blocks}"}).start()
    try:
        disk = tmp_path / "disk.raw"
        disk.write_bytes(os.urandom(24 << 20))
        server.put_object("bkt", "disk.raw", disk)
        ec2 = server.client()
        task = wait_task(ec2, ec2.import_snapshot(DiskContainer={
            "Format": "raw", "UserBucket": {"S3Bucket": "bkt", "S3Key": "disk.raw"}})[
            "ImportTaskId"], snapshot=True)
        detail = task["SnapshotTaskDetail"]
        assert detail["Status"] == "deleted", detail
        assert detail["StatusMessage"] == (
            f"ServerError: the import stopped: no space left in the block store ({blocks})")
        assert [p.name for p in (blocks / "packs").iterdir()] == []
    finally:
        server.stop()


def test_a_full_database_disk_is_recognised():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    full = OperationalError("INSERT ...", {}, sqlite3.OperationalError(
        "database or disk is full"))
    other = OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
    assert Database.is_out_of_space(full) and not Database.is_out_of_space(other)
    assert not Database.is_out_of_space(OSError(28, "No space left on device"))
