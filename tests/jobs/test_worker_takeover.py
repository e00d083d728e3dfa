"""Durable jobs: a worker SIGKILLed mid-import loses its lease, another worker takes the job over
and the task completes without converting the finished volume again; a running import stops
within seconds when cancelled."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from ..helpers import Server, snapshot_sha256, wait_task

pytestmark = pytest.mark.slow  # many imports; `-m 'not slow'` skips them

BIG = 512 * 1024 * 1024


@pytest.fixture(scope="module")
def big_disk(tmp_path_factory):
    """512 MiB of incompressible data: long enough to kill or cancel a worker in the middle."""
    path = tmp_path_factory.mktemp("big") / "big.raw"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(BIG // (16 << 20)):
            chunk = os.urandom(16 << 20)
            digest.update(chunk)
            f.write(chunk)
    return path, digest.hexdigest()


@pytest.fixture
def api_only(tmp_path):
    """An API server with no workers of its own; the test runs `vmimport worker` processes."""
    srv = Server(tmp_path / "data", workers=0).start()
    yield srv
    srv.stop()


def _worker(api: Server) -> Server:
    # 128 MiB/s: the 512 MiB volume takes about 4 s, time enough to kill or cancel it mid-way.
    return Server(api.data_dir, port=api.port, workers=1, database_url=api.database_url,
                  command="worker",
                  env={"VMIMPORT_IMPORT_MAX_BYTES_PER_SECOND": str(128 << 20)}).start()


def test_sigkilled_worker_is_taken_over(api_only, disks, big_disk):
    big, big_sha = big_disk
    api_only.put_object("bkt", "small.raw", disks["raw"])
    api_only.put_object("bkt", "big.raw", big)
    ec2, ebs = api_only.client(), api_only.client("ebs")
    first = _worker(api_only)
    second = None
    try:
        task_id = ec2.import_image(DiskContainers=[
            {"Format": "raw", "UserBucket": {"S3Bucket": "bkt", "S3Key": "small.raw"}},
            {"Format": "raw", "UserBucket": {"S3Bucket": "bkt", "S3Key": "big.raw"}},
        ])["ImportTaskId"]
        deadline = time.monotonic() + 60
        while True:  # wait until the first volume is done and the second is being converted
            task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
            details = task["SnapshotDetails"]
            if details[0]["Status"] == "completed":
                break
            assert time.monotonic() < deadline, task
            time.sleep(0.02)
        assert task["Status"] == "active" and details[1]["Status"] == "active", task
        first_snapshot = details[0]["SnapshotId"]
        first.kill()
        second = _worker(api_only)
        task = wait_task(ec2, task_id, timeout=120)
        assert task["Status"] == "completed", task
        # The finished volume was a checkpoint: same snapshot, not converted again.
        assert task["SnapshotDetails"][0]["SnapshotId"] == first_snapshot
        assert "attempt 2" in second.log_tail(200)
        big_snapshot = task["SnapshotDetails"][1]["SnapshotId"]
        assert snapshot_sha256(ebs, big_snapshot, BIG) == big_sha
    finally:
        first.stop()
        if second:
            second.stop()


def test_cancel_stops_a_running_import(api_only, big_disk):
    big, _ = big_disk
    api_only.put_object("bkt", "big.raw", big)
    ec2 = api_only.client()
    worker = _worker(api_only)
    try:
        task_id = ec2.import_image(DiskContainers=[
            {"Format": "raw", "UserBucket": {"S3Bucket": "bkt", "S3Key": "big.raw"}}])["ImportTaskId"]
        deadline = time.monotonic() + 60
        while True:
            task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
            if task.get("StatusMessage") == "converting":
                break
            assert task["Status"] == "active", f"finished before it could be cancelled: {task}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer = ec2.cancel_import_task(ImportTaskId=task_id)
        assert answer["State"] == "deleting"
        task = wait_task(ec2, task_id, timeout=30)  # a cancel not seen would let it complete
        assert task["Status"] == "deleted"
        assert task["StatusMessage"].startswith("Cancelled by the user")
        assert "ImageId" not in task
        assert ec2.describe_snapshots(Filters=[{"Name": "description",
                                                "Values": [f"*{task_id}"]}])["Snapshots"] == []
    finally:
        worker.stop()
