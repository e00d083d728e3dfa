"""DescribeImportTaskDetail, vmimport's own call, through boto3 with the model the package
ships: the phases an import passed with their times, its disks, and what inspection found —
for a completed import and for one that inspection refused; per account, like every call."""

from __future__ import annotations

import random
import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from vmimport.api.models import add_own_models

from ..helpers import wait_task


def _client(server, key: str = "test", secret: str = "test"):
    session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1")
    add_own_models(session._session)
    return session.client("vmimport", endpoint_url=server.endpoint,
                          config=Config(retries={"max_attempts": 1}))


def _import(server, ec2, bucket: str, name: str, source) -> dict:
    server.put_object(bucket, name, source)
    return wait_task(ec2, ec2.import_image(DiskContainers=[{"UserBucket": {
        "S3Bucket": bucket, "S3Key": name}}])["ImportTaskId"])


def test_detail_of_a_completed_import(server, ec2, disks):
    task = _import(server, ec2, "detail-test", "disk.vmdk", disks["vmdk"])
    detail = _client(server).describe_import_task_detail(ImportTaskId=task["ImportTaskId"])
    assert detail["Kind"] == "image" and detail["Status"] == "completed"
    phases = [p["Phase"] for p in detail["Phases"]]
    assert phases == ["queued", "validating", "validated", "converting", "preparing ami",
                      "completed"]
    times = [p["Time"] for p in detail["Phases"]]
    assert times == sorted(times) and detail["FinishedAt"] == times[-1]
    assert [p.get("Disk") for p in detail["Phases"]][1:4] == [1, 1, 1]
    disk, = detail["Disks"]
    assert disk["Format"] == "VMDK" and disk["Source"] == "s3://detail-test/disk.vmdk"
    assert disk["SnapshotId"] == task["SnapshotDetails"][0]["SnapshotId"]
    assert disk["DiskImageSize"] == disks["vmdk"].stat().st_size
    assert disk["VirtualSize"] == disks["raw"].stat().st_size
    assert 0 < disk["StoredBytes"] < disk["VirtualSize"]
    found = detail["Inspection"]
    assert found["PartitionScheme"] == "mbr" and found["OsName"] == "Ubuntu 22.04.3 LTS"
    assert found["Kernel"] == "5.15.0-91-generic" and found["BootModes"] == ["legacy-bios"]
    assert found["Architecture"] == "x86_64"
    assert "ext4" in [p.get("Filesystem") for p in found["Partitions"]]
    assert found["RootPartition"] in [p["Number"] for p in found["Partitions"]]


def test_detail_of_a_refused_import_says_what_was_found(server, ec2):
    task = _import(server, ec2, "detail-test", "blank.raw", b"\0" * (2 << 20))
    assert task["Status"] == "deleted"
    detail = _client(server).describe_import_task_detail(ImportTaskId=task["ImportTaskId"])
    assert detail["Phases"][-1]["Phase"] == "deleted"
    assert "No valid partitions" in detail["StatusMessage"]
    assert detail["Inspection"]["Findings"] and "OsFamily" not in detail["Inspection"]
    assert "SnapshotId" not in detail["Disks"][0]  # its snapshot went with the failure


def test_detail_is_per_account_and_a_describe_action(server, ec2, disks):
    task = _import(server, ec2, "detail-test", "disk2.vmdk", disks["vmdk"])
    with pytest.raises(ClientError) as refused:
        _client(server, "OTHERKEY", "othersecret").describe_import_task_detail(
            ImportTaskId=task["ImportTaskId"])
    assert refused.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # A key allowed only Describe* may read it (same account).
    detail = _client(server, "READONLY", "readonlysecret").describe_import_task_detail(
        ImportTaskId=task["ImportTaskId"])
    assert detail["Status"] == "completed"
    with pytest.raises(ClientError) as unknown:
        _client(server).describe_import_task_detail(ImportTaskId="ami-0123")
    assert "ami-0123" in unknown.value.response["Error"]["Message"]


def test_detail_counts_the_blocks_a_disk_shares(server, ec2, tmp_path):
    """Blocks found stored already are shared, not written again, and the detail says how
    many: a block repeated inside the disk, then every block of a second copy of the disk."""
    block = 512 * 1024
    rng = random.Random(22)
    repeated = rng.randbytes(block)
    raw = tmp_path / "blocks.raw"
    # 6 blocks of data: 3 different, the 4th repeated 3 times; then a hole
    raw.write_bytes(b"".join(rng.randbytes(block) for _ in range(3)) + repeated * 3
                    + b"\0" * (2 * block))
    vmdk = tmp_path / "blocks.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", str(raw), str(vmdk)], check=True)
    client = _client(server)
    found = []
    for name, source, fmt in (("blocks.vmdk", vmdk, "VMDK"), ("blocks.raw", raw, "RAW")):
        server.put_object("detail-shared", name, source)
        task = wait_task(ec2, ec2.import_snapshot(DiskContainer={"Format": fmt, "UserBucket": {
            "S3Bucket": "detail-shared", "S3Key": name}})["ImportTaskId"], snapshot=True)
        assert task["SnapshotTaskDetail"]["Status"] == "completed"
        disk, = client.describe_import_task_detail(ImportTaskId=task["ImportTaskId"])["Disks"]
        found.append((disk["StoredBytes"] // block, disk["SharedBlocks"]))
    assert found == [(6, 2), (6, 6)]
