"""ImportSnapshot + RegisterImage: the byte-exact path (no AMI from the import itself), as
distro builders and the `snapshot-imported` waiter use it."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from ..helpers import qemu_raw_sha256, snapshot_sha256, wait_task


def test_import_snapshot_then_register_image(server, ec2, ebs, disks):
    bucket = "snap-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.vmdk", disks["vmdk"])
    started = ec2.import_snapshot(
        Description="byte exact", DiskContainer={
            "Format": "VMDK", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.vmdk"}},
        TagSpecifications=[{"ResourceType": "import-snapshot-task",
                            "Tags": [{"Key": "k", "Value": "v"}]}])
    task_id = started["ImportTaskId"]
    assert task_id.startswith("import-snap-")
    detail = started["SnapshotTaskDetail"]
    assert detail["Status"] == "active" and detail["DiskImageSize"] == 0.0
    assert started["Tags"] == [{"Key": "k", "Value": "v"}]

    ec2.get_waiter("snapshot_imported").wait(ImportTaskIds=[task_id],
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    task = wait_task(ec2, task_id, snapshot=True)
    detail = task["SnapshotTaskDetail"]
    assert detail["Status"] == "completed"
    assert "Progress" not in detail and "StatusMessage" not in detail
    assert detail["Format"] == "VMDK"
    assert task["Description"] == "byte exact"
    snapshot_id = detail["SnapshotId"]
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    assert snapshot_sha256(ebs, snapshot_id, size) == expected
    assert ec2.describe_images(Filters=[{"Name": "name", "Values": [task_id]}])["Images"] == []

    name = f"my-image-{uuid.uuid4().hex[:6]}"
    image_id = server.aws(
        "ec2", "register-image", "--name", name, "--root-device-name", "/dev/xvda",
        "--block-device-mappings", f"DeviceName=/dev/xvda,Ebs={{SnapshotId={snapshot_id}}}",
        "--architecture", "x86_64", "--virtualization-type", "hvm", "--ena-support",
        "--boot-mode", "uefi")["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["Name"] == name and image["BootMode"] == "uefi"
    assert image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snapshot_id
    with pytest.raises(ClientError) as err:
        ec2.register_image(Name=name, RootDeviceName="/dev/xvda", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}])
    assert err.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"
    with pytest.raises(ClientError) as err:
        ec2.register_image(Name=name + "x", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}])
    assert err.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_import_snapshot_failure_and_cli(server, ec2):
    started = server.aws("ec2", "import-snapshot", "--disk-container",
                         "Format=RAW,UserBucket={S3Bucket=no-such-bucket-x,S3Key=k.raw}")
    task = wait_task(ec2, started["ImportTaskId"], snapshot=True)
    detail = task["SnapshotTaskDetail"]
    assert detail["Status"] == "deleted"
    assert detail["StatusMessage"].startswith(
        "ClientError: Disk validation failed [Invalid S3 source location]")
    listed = server.aws("ec2", "describe-import-snapshot-tasks", "--import-task-ids",
                        started["ImportTaskId"])["ImportSnapshotTasks"]
    assert listed[0]["SnapshotTaskDetail"]["Status"] == "deleted"


def test_import_snapshot_refusals(ec2):
    for params, code in [
        ({}, "MissingParameter"),
        ({"DiskContainer": {"Format": "OVA", "Url": "s3://bkt/k"}}, "InvalidParameterValue"),
        ({"DiskContainer": {"Url": "s3://bkt/k"}, "KmsKeyId": "alias/x"},
         "InvalidParameterCombination"),
    ]:
        with pytest.raises(ClientError) as err:
            ec2.import_snapshot(**params)
        assert err.value.response["Error"]["Code"] == code


def test_copy_image_renames_like_packer(server, ec2, ebs, disks):
    """Packer's amazon-import: ImportImage, CopyImage to the wanted name, wait for
    image_available, deregister the original, tag the copy."""
    bucket = "copy-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.vmdk", disks["vmdk"])
    task = wait_task(ec2, ec2.import_image(DiskContainers=[
        {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.vmdk"}}])
        ["ImportTaskId"])
    source = task["ImageId"]
    ec2.create_tags(Resources=[source], Tags=[{"Key": "from", "Value": "import"}])
    name = f"packer-{uuid.uuid4().hex[:6]}"
    copy = ec2.copy_image(Name=name, SourceImageId=source, SourceRegion="us-east-1",
                          CopyImageTags=True)["ImageId"]
    ec2.get_waiter("image_available").wait(ImageIds=[copy],
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    ec2.deregister_image(ImageId=source, DeleteAssociatedSnapshots=True)
    image = ec2.describe_images(ImageIds=[copy])["Images"][0]
    assert image["Name"] == name
    assert image["Tags"] == [{"Key": "from", "Value": "import"}]
    snapshot_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    assert snapshot_sha256(ebs, snapshot_id, size) == expected  # the blocks outlived the source
    for params, code in [
        ({"Name": name, "SourceImageId": copy, "SourceRegion": "us-east-1"},
         "InvalidAMIName.Duplicate"),
        ({"Name": "x-" + name, "SourceImageId": copy, "SourceRegion": "eu-west-1"},
         "InvalidParameterValue"),
        ({"Name": "y-" + name, "SourceImageId": source, "SourceRegion": "us-east-1"},
         "InvalidAMIID.NotFound"),
    ]:
        with pytest.raises(ClientError) as err:
            ec2.copy_image(**params)
        assert err.value.response["Error"]["Code"] == code
