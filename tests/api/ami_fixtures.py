"""AMIs for the attribute, sharing and STS tests: a small sparse RAW disk imported with
ImportSnapshot and registered, so each test gets its own AMI within a second or two."""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from ..helpers import wait_task

BLOCK = 512 * 1024
DISK_BYTES = 8 * 1024 * 1024
DATA_BLOCKS = (0, 5)  # the 512 KiB blocks that hold data; the rest is a hole


def sparse_disk(path) -> None:
    with open(path, "wb") as f:
        for index in DATA_BLOCKS:
            f.seek(index * BLOCK)
            f.write(bytes(range(256)) * (BLOCK // 256))
        f.truncate(DISK_BYTES)


def new_ami(server, ec2, tmp_path, name: str | None = None) -> dict:
    """{"ImageId", "SnapshotId"} of a freshly registered AMI of the default account."""
    bucket = "ami-life-" + uuid.uuid4().hex[:8]
    disk = tmp_path / f"{bucket}.raw"
    sparse_disk(disk)
    server.put_object(bucket, "disk.raw", disk)
    task_id = ec2.import_snapshot(DiskContainer={
        "Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}})["ImportTaskId"]
    detail = wait_task(ec2, task_id, snapshot=True)["SnapshotTaskDetail"]
    assert detail["Status"] == "completed", detail
    image_id = ec2.register_image(
        Name=name or f"ami-life-{uuid.uuid4().hex[:8]}", RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                              "Ebs": {"SnapshotId": detail["SnapshotId"]}}])["ImageId"]
    return {"ImageId": image_id, "SnapshotId": detail["SnapshotId"]}


def error_code(call, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]["Code"]


def error_of(call, **kwargs) -> dict:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def wait_image(ec2, image_id: str, timeout: float = 120) -> dict:
    """Poll until the image is no longer ``pending``; return its description."""
    deadline = time.monotonic() + timeout
    while True:
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        if image["State"] != "pending":
            return image
        assert time.monotonic() < deadline, f"{image_id} still pending after {timeout}s"
        time.sleep(0.2)
