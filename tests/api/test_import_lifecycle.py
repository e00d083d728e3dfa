"""ImportImage end to end through real clients: the bytes of the snapshot read back through the
EBS direct APIs equal qemu-img's own raw conversion of the same input."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from ..helpers import qemu_raw_sha256, snapshot_sha256, wait_task


def _bucket() -> str:
    return f"imports-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("fmt", ["raw", "vmdk"])
def test_import_image_boto3_bytes_match_qemu(server, ec2, ebs, disks, fmt):
    bucket = _bucket()
    server.put_object(bucket, f"disk.{fmt}", disks[fmt])
    started = ec2.import_image(
        Description="from boto3",
        DiskContainers=[{"Format": fmt.upper(), "Description": "boot",
                         "UserBucket": {"S3Bucket": bucket, "S3Key": f"disk.{fmt}"}}])
    task_id = started["ImportTaskId"]
    assert task_id.startswith("import-ami-") and len(task_id) == len("import-ami-") + 17
    assert started["Status"] == "active"
    assert started["StatusMessage"] == "pending"
    assert started["SnapshotDetails"][0]["UserBucket"] == {"S3Bucket": bucket,
                                                            "S3Key": f"disk.{fmt}"}

    task = wait_task(ec2, task_id)
    assert task["Status"] == "completed", task
    assert "StatusMessage" not in task and "Progress" not in task
    detail = task["SnapshotDetails"][0]
    assert detail["Status"] == "completed"
    assert detail["Format"] == fmt.upper()
    assert detail["DiskImageSize"] == float(disks[fmt].stat().st_size)
    assert detail["DeviceName"] == "/dev/sda1"

    image = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert image["Name"] == task_id
    assert image["State"] == "available"
    assert image["RootDeviceName"] == "/dev/sda1"
    assert image["VirtualizationType"] == "hvm"
    assert image["Description"] == "from boto3"
    mapping = image["BlockDeviceMappings"][0]
    assert mapping["DeviceName"] == "/dev/sda1"
    assert mapping["Ebs"]["SnapshotId"] == detail["SnapshotId"]

    snapshot = ec2.describe_snapshots(SnapshotIds=[detail["SnapshotId"]])["Snapshots"][0]
    assert snapshot["State"] == "completed"
    assert snapshot["Description"] == f"Created by AWS-VMImport service for {task_id}"

    expected, size = qemu_raw_sha256(disks[fmt], "raw" if fmt == "raw" else "vmdk")
    assert snapshot_sha256(ebs, detail["SnapshotId"], size) == expected


def test_import_image_with_aws_cli(server, disks):
    bucket = _bucket()
    server.put_object(bucket, "disk.vmdk", disks["vmdk"])
    started = server.aws("ec2", "import-image", "--description", "cli",
                         "--disk-containers",
                         f"Format=vmdk,UserBucket={{S3Bucket={bucket},S3Key=disk.vmdk}}")
    task_id = started["ImportTaskId"]
    import time
    for _ in range(600):
        tasks = server.aws("ec2", "describe-import-image-tasks", "--import-task-ids", task_id)
        task = tasks["ImportImageTasks"][0]
        if task["Status"] != "active":
            break
        time.sleep(0.2)
    assert task["Status"] == "completed", task
    images = server.aws("ec2", "describe-images", "--image-ids", task["ImageId"])["Images"]
    assert images[0]["ImageId"] == task["ImageId"]
    assert images[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == \
        task["SnapshotDetails"][0]["SnapshotId"]


def test_url_s3_form_and_progress_fields(server, ec2, disks):
    bucket = _bucket()
    server.put_object(bucket, "nested/dir/disk.raw", disks["raw"])
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "raw", "Url": f"s3://{bucket}/nested/dir/disk.raw"}])["ImportTaskId"]
    seen = set()
    import time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
        if task["Status"] != "active":
            break
        seen.add(task.get("StatusMessage"))
        assert task["Progress"].isdigit()
        time.sleep(0.05)
    assert task["Status"] == "completed", task
    assert task["SnapshotDetails"][0]["Url"] == f"s3://{bucket}/nested/dir/disk.raw"
    assert seen <= {"pending", "validating", "validated", "converting", "preparing ami"}


def test_declared_format_must_match_bytes(server, ec2, disks):
    bucket = _bucket()
    server.put_object(bucket, "disk.qcow2", disks["qcow2"])
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.qcow2"}}]
    )["ImportTaskId"]
    task = wait_task(ec2, task_id)
    assert task["Status"] == "deleted"
    assert task["StatusMessage"].startswith(
        "ClientError: Disk validation failed [Unsupported specified file format]")
    assert "qcow2" in task["StatusMessage"].lower()


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "corrupt"])
def test_bad_input_ends_task_with_client_error(server, ec2, disks, case):
    bucket = _bucket()
    data = disks["vmdk"].read_bytes()
    if case == "empty":
        server.put_object(bucket, "disk.vmdk", b"")
    elif case == "truncated":
        server.put_object(bucket, "disk.vmdk", data[: len(data) // 2])
    elif case == "corrupt":
        broken = bytearray(data)
        for offset in range(70 * 1024, len(broken) - 4096, 97 * 1024):
            broken[offset:offset + 64] = bytes(range(64))
        server.put_object(bucket, "disk.vmdk", bytes(broken))
    else:
        (server.buckets / bucket).mkdir(parents=True)
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.vmdk"}}]
    )["ImportTaskId"]
    task = wait_task(ec2, task_id)
    assert task["Status"] == "deleted", task
    message = task["StatusMessage"]
    assert message.startswith("ClientError: "), message
    expected = {"missing": "Invalid S3 source location", "empty": "empty",
                "truncated": "VMDK", "corrupt": "VMDK"}[case]
    assert expected in message, message
    assert "ImageId" not in task
    # The server keeps serving.
    assert ec2.describe_images(Owners=["self"])["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_multiple_disks_get_their_own_snapshots(server, ec2, ebs, disks):
    bucket = _bucket()
    server.put_object(bucket, "a.vmdk", disks["vmdk"])
    server.put_object(bucket, "b.raw", disks["raw"])
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": "a.vmdk"}},
        {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "b.raw"}},
    ])["ImportTaskId"]
    task = wait_task(ec2, task_id)
    assert task["Status"] == "completed", task
    devices = [d["DeviceName"] for d in task["SnapshotDetails"]]
    assert devices == ["/dev/sda1", "/dev/sdb"]
    image = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert [m["DeviceName"] for m in image["BlockDeviceMappings"]] == devices
    snap_ids = {d["SnapshotId"] for d in task["SnapshotDetails"]}
    assert len(snap_ids) == 2


def test_snapshot_id_source_shares_blocks(server, ec2, ebs, disks):
    bucket = _bucket()
    server.put_object(bucket, "disk.raw", disks["raw"])
    first = wait_task(ec2, ec2.import_image(DiskContainers=[
        {"UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}}])["ImportTaskId"])
    source_snapshot = first["SnapshotDetails"][0]["SnapshotId"]
    second = wait_task(ec2, ec2.import_image(DiskContainers=[
        {"SnapshotId": source_snapshot}])["ImportTaskId"])
    assert second["Status"] == "completed", second
    new_snapshot = second["SnapshotDetails"][0]["SnapshotId"]
    assert new_snapshot != source_snapshot
    expected, size = qemu_raw_sha256(disks["raw"], "raw")
    assert snapshot_sha256(ebs, new_snapshot, size) == expected


def test_unknown_task_id_and_other_account(server, ec2):
    with pytest.raises(ClientError) as err:
        ec2.describe_import_image_tasks(ImportTaskIds=["import-ami-0123456789abcdef0"])
    assert err.value.response["Error"]["Code"] == "InvalidConversionTaskId"
