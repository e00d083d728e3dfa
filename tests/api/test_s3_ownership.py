"""Buckets belong to an account: another account cannot list, read, write or import from
them; links under buckets/ are never followed. And the flow the issue asks for: aws s3 cp a
disk, then aws ec2 import-image from it."""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from ..helpers import qemu_raw_sha256, snapshot_sha256, wait_task
from .test_encrypted_import import _ensure_role
from .test_s3_objects import aws_cli


def _name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def other(server):
    return server.client("s3", "OTHERKEY", "othersecret")


def _code(info) -> str:
    return info.value.response["Error"]["Code"]


def _import_as_other(server, bucket: str, key: str) -> dict:
    ec2 = server.client("ec2", "OTHERKEY", "othersecret")
    _ensure_role(server.client("iam", "OTHERKEY", "othersecret"))
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": key}}])["ImportTaskId"]
    return wait_task(ec2, task_id)


def test_other_account_is_refused(server, other):
    s3 = server.client("s3")
    name = _name("owned")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="disk.raw", Body=b"\0" * 4096)
    for call in (lambda: other.list_objects_v2(Bucket=name),
                 lambda: other.get_object(Bucket=name, Key="disk.raw"),
                 lambda: other.put_object(Bucket=name, Key="planted", Body=b"x"),
                 # larger than what is drained of a refused body (and sent after Expect:
                 # 100-continue): the connection is closed, the next call opens another
                 lambda: other.put_object(Bucket=name, Key="planted", Body=b"x" * (3 << 20)),
                 lambda: other.delete_object(Bucket=name, Key="disk.raw"),
                 lambda: other.create_multipart_upload(Bucket=name, Key="k"),
                 lambda: other.delete_bucket(Bucket=name)):
        with pytest.raises(ClientError) as info:
            call()
        assert _code(info) == "AccessDenied"
    with pytest.raises(ClientError) as info:
        other.create_bucket(Bucket=name)
    assert _code(info) == "BucketAlreadyExists"
    assert name not in [b["Name"] for b in other.list_buckets()["Buckets"]]
    assert not (server.buckets / name / "planted").exists()
    assert (server.buckets / name / "disk.raw").exists()

    task = _import_as_other(server, name, "disk.raw")
    assert task["Status"] == "deleted", task
    assert "403 Forbidden" in task["StatusMessage"], task
    assert "belongs to another account" in task["StatusMessage"], task


def test_hand_made_bucket_belongs_to_the_configured_account(server, other):
    name = _name("byhand")
    server.put_object(name, "file", b"by hand")
    s3 = server.client("s3")
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket=name, Key="file")["Body"].read() == b"by hand"
    assert s3.head_object(Bucket=name, Key="file")["ContentLength"] == 7
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket=name, Key="file")
    assert _code(info) == "AccessDenied"
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=name)
    assert _code(info) == "BucketAlreadyOwnedByYou"


def test_symlinks_are_never_followed(server, tmp_path):
    s3 = server.client("s3")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    linked = _name("linked")
    (server.buckets / linked).symlink_to(outside)
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=linked, Key="secret")
    assert _code(info) == "AccessDenied"
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=linked)
    assert _code(info) == "BucketAlreadyExists"
    assert linked not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    ec2 = server.client("ec2")
    task = wait_task(ec2, ec2.import_image(DiskContainers=[
        {"Format": "RAW", "UserBucket": {"S3Bucket": linked, "S3Key": "secret"}}])["ImportTaskId"])
    assert task["Status"] == "deleted" and "symbolic link" in task["StatusMessage"], task

    # A link inside a real bucket, and a directory link on the way to a key.
    name = _name("inner")
    s3.create_bucket(Bucket=name)
    (server.buckets / name / "alias").symlink_to(outside / "secret")
    (server.buckets / name / "dir").symlink_to(outside)
    for key in ("alias", "dir/secret"):
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket=name, Key=key)
        assert _code(info) == "NoSuchKey"
    with pytest.raises(ClientError):
        s3.put_object(Bucket=name, Key="dir/planted", Body=b"x")
    assert not (outside / "planted").exists()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])] == []


def test_aws_s3_cp_then_import_image(server, disks, ebs):
    bucket = _name("flow")
    aws_cli(server, "s3", "mb", f"s3://{bucket}")
    aws_cli(server, "s3", "cp", str(disks["vmdk"]), f"s3://{bucket}/disks/disk.vmdk")
    started = server.aws("ec2", "import-image", "--disk-containers",
                         f"Format=vmdk,UserBucket={{S3Bucket={bucket},S3Key=disks/disk.vmdk}}")
    task_id = started["ImportTaskId"]
    for _ in range(600):
        task = server.aws("ec2", "describe-import-image-tasks",
                          "--import-task-ids", task_id)["ImportImageTasks"][0]
        if task["Status"] != "active":
            break
        time.sleep(0.2)
    assert task["Status"] == "completed", task
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    assert snapshot_sha256(ebs, task["SnapshotDetails"][0]["SnapshotId"], size) == expected


def test_no_export_into_another_accounts_bucket(server, ec2, disks, other):
    from .test_export_image import import_ami, wait_export
    theirs = _name("theirs")
    other.create_bucket(Bucket=theirs)
    ami = import_ami(server, ec2, disks["raw"])
    task = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="RAW",
                            S3ExportLocation={"S3Bucket": theirs})
    done = wait_export(ec2, task["ExportImageTaskId"])
    assert done["Status"] == "deleted", done
    assert "belongs to another account" in done["StatusMessage"], done
    assert list((server.buckets / theirs).iterdir()) == []
