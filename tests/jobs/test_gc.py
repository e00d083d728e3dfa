"""`vmimport gc`: packs of deleted snapshots go, packs still used stay readable."""

from __future__ import annotations

import subprocess

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
