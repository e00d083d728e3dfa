"""`vmimport gc`: packs of deleted snapshots go, packs still used stay readable, a pack a kept
snapshot uses little of is compacted."""

from __future__ import annotations

import subprocess
import time

from ..helpers import (BIN, Server, make_raw_disk, qemu_convert, qemu_raw_sha256,
                       snapshot_sha256, wait_task)

MiB = 1024 * 1024


def _packs(data_dir):
    return {p.name for p in (data_dir / "blocks" / "packs").iterdir()
            if not p.name.startswith(".")}


def test_gc_deletes_only_unreferenced_packs(tmp_path, disks):
    server = Server(tmp_path / "data").start()
    try:
        ec2 = server.client()
        server.put_object("bkt", "disk.raw", disks["raw"])
        server.put_object("bkt", "disk.vmdk", disks["vmdk"])
        keep = wait_task(ec2, ec2.import_image(DiskContainers=[
            {"UserBucket": {"S3Bucket": "bkt", "S3Key": "disk.vmdk"}}])["ImportTaskId"])
        kept_packs = _packs(server.data_dir)  # one per thread that stored blocks
        assert 1 <= len(kept_packs) <= 2
        drop = wait_task(ec2, ec2.import_image(DiskContainers=[
            {"UserBucket": {"S3Bucket": "bkt", "S3Key": "disk.raw"}}])["ImportTaskId"])
        # The second import stored nothing new (dedup), so it left no pack of its own.
        assert _packs(server.data_dir) == kept_packs
        ec2.deregister_image(ImageId=drop["ImageId"], DeleteAssociatedSnapshots=True)
        # The two disks hold the same bytes: every block is still used by the kept snapshot.
        gc = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(server.data_dir),
                             *(["--database-url", server.database_url]
                               if server.database_url else [])],
                            capture_output=True, text=True, timeout=120)
        assert gc.returncode == 0, gc.stderr
        assert "removed 0 unreferenced pack(s)" in gc.stdout
        ec2.deregister_image(ImageId=keep["ImageId"], DeleteAssociatedSnapshots=True)
        gc = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(server.data_dir),
                             *(["--database-url", server.database_url]
                               if server.database_url else [])],
                            capture_output=True, text=True, timeout=120)
        assert f"removed {len(kept_packs)} unreferenced pack(s)" in gc.stdout
        assert _packs(server.data_dir) == set()
    finally:
        server.stop()


def _gc(server: Server, **env) -> str:
    done = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(server.data_dir),
                           *(["--database-url", server.database_url]
                             if server.database_url else [])],
                          env={**server.env, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gc_compacts_the_packs_a_kept_snapshot_uses_little_of(tmp_path):
    """Disk b holds disk a's first 4 of 48 MiB; a's snapshot is deleted: a's packs are
    mostly unused. gc moves b's blocks out of them (b reads back the same through the EBS
    direct API); the next run keeps them for the leftover grace (a reader may have read the
    old manifest), a run after it reclaims them."""
    a = make_raw_disk(tmp_path / "a.raw", 48 * MiB, seed=11, data_fraction=1.0)
    b = tmp_path / "b.raw"
    with open(a, "rb") as source, open(b, "wb") as out:
        out.write(source.read(4 * MiB))
        out.truncate(48 * MiB)
    server = Server(tmp_path / "data").start()
    try:
        ec2 = server.client()
        snapshots = {}
        for name in ("a", "b"):
            server.put_object("bkt", f"{name}.qcow2",
                              qemu_convert(tmp_path / f"{name}.raw",
                                           tmp_path / f"{name}.qcow2", "qcow2"))
            task = wait_task(ec2, ec2.import_snapshot(DiskContainer={
                "Format": "qcow2", "UserBucket": {"S3Bucket": "bkt", "S3Key": f"{name}.qcow2"}})[
                "ImportTaskId"], snapshot=True)
            snapshots[name] = task["SnapshotTaskDetail"]["SnapshotId"]
        a_packs = _packs(server.data_dir)
        ec2.delete_snapshot(SnapshotId=snapshots["a"])
        out = _gc(server)
        assert "compacted " in out and "rewrote 1 manifest(s)" in out, out
        expected, size = qemu_raw_sha256(tmp_path / "b.qcow2", "qcow2")
        assert snapshot_sha256(server.client("ebs"), snapshots["b"], size) == expected
        compacted = a_packs & _packs(server.data_dir)  # a's packs that b still used
        assert compacted
        out = _gc(server)
        assert "compacted" not in out and "removed 0 unreferenced pack(s)" in out, out
        assert compacted <= _packs(server.data_dir)  # within the grace (24 hours by default)
        out = _gc(server, VMIMPORT_GC_LEFTOVER_GRACE_HOURS="0")
        assert "compacted" not in out, out
        assert _packs(server.data_dir).isdisjoint(a_packs)  # reclaimed, every one
        assert snapshot_sha256(server.client("ebs"), snapshots["b"], size) == expected
    finally:
        server.stop()


def _imported(server: Server, disks) -> tuple[object, dict]:
    """The server's EC2 client and the completed import of the test VMDK."""
    ec2 = server.client()
    server.put_object("bkt", "disk.vmdk", disks["vmdk"])
    return ec2, wait_task(ec2, ec2.import_image(DiskContainers=[
        {"UserBucket": {"S3Bucket": "bkt", "S3Key": "disk.vmdk"}}])["ImportTaskId"])


def _wait_for_line(server: Server, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in the log: {server.log_tail()}"
        time.sleep(0.2)


def test_workers_take_turns_at_scheduled_gc(tmp_path, disks):
    """Setting gc_every_hours: the worker processes (here two sharing one database, as on
    two machines) run gc once per interval between them, and it deletes what the CLI would."""
    server = Server(tmp_path / "data").start()
    try:
        ec2, task = _imported(server, disks)
        ec2.deregister_image(ImageId=task["ImageId"], DeleteAssociatedSnapshots=True)
        assert _packs(server.data_dir)  # unreferenced now, still there: gc has not run
    finally:
        server.stop()
    scheduled = {"VMIMPORT_GC_EVERY_HOURS": "1000"}
    server = Server(tmp_path / "data", port=server.port, env=scheduled,
                    database_url=server.database_url).start()
    second = None
    try:
        _wait_for_line(server, "scheduled gc: removed")
        assert _packs(server.data_dir) == set()
        second = Server(tmp_path / "data", port=server.port, workers=1, env=scheduled,
                        database_url=server.database_url, command="worker").start()
        _wait_for_line(second, "scheduled gc every 1000 h: not due yet (last started")
        logs = server.log_path.read_text() + second.log_path.read_text()
        assert logs.count("scheduled gc started by") == 1, logs
    finally:
        if second is not None:
            second.stop()
        server.stop()


def test_gc_removes_manifests_of_snapshots_that_no_longer_exist(tmp_path, disks):
    """A manifest whose snapshot has no row (its delete failed after the commit, or a
    compaction rewrote it as the snapshot went) is removed once older than an import in flight
    could be (6 hours, even with no leftover grace), and its packs with it; a younger one is
    kept."""
    import os
    import shutil

    server = Server(tmp_path / "data").start()
    try:
        ec2, task = _imported(server, disks)
        manifests = server.data_dir / "blocks" / "manifests"
        real = manifests / task["SnapshotDetails"][0]["SnapshotId"]
        old, young = manifests / "snap-0000000000000000a", manifests / "snap-0000000000000000b"
        shutil.copy(real, old)
        shutil.copy(real, young)
        seven_hours_ago = time.time() - 7 * 3600
        os.utime(old, (seven_hours_ago, seven_hours_ago))
        os.utime(real, (seven_hours_ago, seven_hours_ago))  # its snapshot exists: kept
        packs = _packs(server.data_dir)

        no_grace = {"VMIMPORT_GC_LEFTOVER_GRACE_HOURS": "0"}
        out = _gc(server, **no_grace)
        assert "removed 1 manifest(s) of snapshots that no longer exist" in out, out
        assert not old.exists() and young.exists() and real.exists()
        ec2.deregister_image(ImageId=task["ImageId"], DeleteAssociatedSnapshots=True)
        assert "removed 0 unreferenced pack(s)" in _gc(server, **no_grace)  # the young one's
        assert _packs(server.data_dir) == packs

        os.utime(young, (seven_hours_ago, seven_hours_ago))
        out = _gc(server, **no_grace)
        assert "removed 1 manifest(s) of snapshots that no longer exist" in out, out
        assert f"removed {len(packs)} unreferenced pack(s)" in out, out
        assert _packs(server.data_dir) == set()
    finally:
        server.stop()
