"""`vmimport gc`: packs of deleted snapshots go, packs still used stay readable."""

from __future__ import annotations

import subprocess
import time

from ..helpers import BIN, Server, wait_task


def _packs(data_dir):
    return {p.name for p in (data_dir / "blocks" / "packs").iterdir()}


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
        ec2 = server.client()
        server.put_object("bkt", "disk.vmdk", disks["vmdk"])
        task = wait_task(ec2, ec2.import_image(DiskContainers=[
            {"UserBucket": {"S3Bucket": "bkt", "S3Key": "disk.vmdk"}}])["ImportTaskId"])
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
