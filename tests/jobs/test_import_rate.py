"""``import_max_bytes_per_second`` limits the data read, not the holes: a 2 GiB sparse RAW
disk holding 1 MiB imports at 1 MiB/s in about a second; counting holes it took 2,048 s,
far past the generous wait below."""

from __future__ import annotations

import subprocess

from ..helpers import Server, snapshot_sha256, wait_task

SIZE = 2 << 30
DATA = 1 << 20


def test_holes_do_not_count_against_the_rate(tmp_path):
    disk = tmp_path / "sparse.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), str(SIZE)], check=True)
    subprocess.run(["dd", "if=/dev/urandom", f"of={disk}", "bs=64K", f"count={DATA >> 16}",
                    "seek=8192", "conv=notrunc", "status=none"], check=True)
    server = Server(tmp_path / "data", env={
        "VMIMPORT_IMPORT_MAX_BYTES_PER_SECOND": str(DATA)}).start()
    try:
        server.put_object("bkt", "sparse.raw", disk)
        ec2 = server.client()
        task_id = ec2.import_snapshot(DiskContainer={
            "Format": "RAW", "UserBucket": {"S3Bucket": "bkt", "S3Key": "sparse.raw"}})[
            "ImportTaskId"]
        detail = wait_task(ec2, task_id, timeout=300, snapshot=True)["SnapshotTaskDetail"]
        assert detail["Status"] == "completed", detail
        expected = subprocess.run(["sha256sum", str(disk)], capture_output=True, text=True,
                                  check=True).stdout.split()[0]
        assert snapshot_sha256(server.client("ebs"), detail["SnapshotId"], SIZE) == expected
    finally:
        server.stop()
