"""Export sinks into a local bucket: visible only when complete, zeros left as holes, nothing
left when aborted, no path outside the bucket, and a killed worker's half-written export
reclaimed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from vmimport.config import Settings
from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline.sinks import PARTIAL_DIR, LocalBucketSink, reclaim_partial_exports


@pytest.fixture
def settings(tmp_path) -> Settings:
    (tmp_path / "buckets" / "exports").mkdir(parents=True)
    return Settings(data_dir=tmp_path)


def test_visible_only_once_committed(settings):
    bucket = settings.buckets_dir / "exports"
    sink = LocalBucketSink(bucket, "exports", "vms/disk.raw")
    sink.write(b"abc")
    sink.skip(1 << 20)
    sink.write(b"z")
    assert not (bucket / "vms").exists()
    sink.commit()
    data = (bucket / "vms" / "disk.raw").read_bytes()
    assert data[:3] == b"abc" and data[-1:] == b"z" and len(data) == 3 + (1 << 20) + 1
    assert os.listdir(bucket / PARTIAL_DIR) == []


def test_written_zeros_become_holes_and_the_bytes_read_back(settings):
    bucket = settings.buckets_dir / "exports"
    sink = LocalBucketSink(bucket, "exports", "vms/disk.raw")
    data = os.urandom(100 * 1024)
    expected = bytearray()
    # A header off the 64 KiB grid, data with 1 MiB of written zeros inside, a skipped
    # stretch, and a trailing skip (the file still ends at the disk's size).
    for piece, skipped in ((b"header" * 100, 0), (data + bytes(1024 * 1024) + data, 0),
                           (None, 3 * 1024 * 1024), (data[:7], 0), (None, 512 * 1024)):
        if piece is None:
            sink.skip(skipped)
            expected += bytes(skipped)
        else:
            sink.write(piece)
            expected += piece
        assert sink.position == len(expected)
    sink.commit()
    target = bucket / "vms" / "disk.raw"
    assert target.read_bytes() == bytes(expected)
    # Data takes ~330 KiB; without holes the file would take its whole 4.9 MiB.
    assert target.stat().st_blocks * 512 < 1024 * 1024
    assert os.listdir(bucket / PARTIAL_DIR) == []


def test_abort_leaves_nothing(settings):
    bucket = settings.buckets_dir / "exports"
    sink = LocalBucketSink(bucket, "exports", "disk.raw")
    sink.write(b"x" * 1000)
    sink.abort()
    assert sorted(os.listdir(bucket)) == [PARTIAL_DIR]
    assert os.listdir(bucket / PARTIAL_DIR) == []


@pytest.mark.parametrize("key", ["../escape.raw", "/abs.raw", "a//b.raw", "a/../b.raw",
                                 f"{PARTIAL_DIR}/x.raw"])
def test_keys_outside_the_bucket_are_refused(settings, key):
    with pytest.raises(ImportFailure, match="must name a file inside the bucket"):
        LocalBucketSink(settings.buckets_dir / "exports", "exports", key)


def test_symlinks_are_never_followed(settings, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (settings.buckets_dir / "linked").symlink_to(outside)
    with pytest.raises(ImportFailure, match="symbolic link"):
        LocalBucketSink(settings.buckets_dir / "linked", "linked", "disk.raw")
    (settings.buckets_dir / "exports" / "dir").symlink_to(outside)
    with pytest.raises(ImportFailure, match="inside the bucket"):
        LocalBucketSink(settings.buckets_dir / "exports", "exports", "dir/disk.raw")
    assert os.listdir(outside) == []


def test_a_killed_workers_partial_export_is_reclaimed(settings):
    partial_dir = settings.buckets_dir / "exports" / PARTIAL_DIR
    partial_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    (partial_dir / f".partial-aaaa-{dead}@{host}").write_bytes(b"x" * 4096)
    (partial_dir / ".partial-bbbb-1@elsewhere").write_bytes(b"y" * 4096)
    writing = LocalBucketSink(settings.buckets_dir / "exports", "exports", "busy.raw")
    writing.write(b"still being written")
    # At worker start (no grace): only this host's dead writer's file.
    assert reclaim_partial_exports(settings, None).removed == 1
    assert sorted(p.name for p in partial_dir.iterdir()) == sorted(
        [".partial-bbbb-1@elsewhere", writing.partial.name])
    # gc (by age): the other host's old file too, never one being written.
    os.utime(partial_dir / ".partial-bbbb-1@elsewhere", (0, 0))
    os.utime(writing.partial, (0, 0))
    assert reclaim_partial_exports(settings, 60).removed == 1
    assert [p.name for p in partial_dir.iterdir()] == [writing.partial.name]
    writing.commit()
    assert (settings.buckets_dir / "exports" / "busy.raw").read_bytes() == b"still being written"
