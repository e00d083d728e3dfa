"""ImportImage reading its source from a real S3-compatible server (SeaweedFS), by UserBucket
and by s3:// URL, with ranged reads; the bytes must match qemu-img's raw conversion."""

from __future__ import annotations

import pytest

from ..helpers import Server, qemu_raw_sha256, snapshot_sha256, wait_task
from ..s3server import S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_backed(tmp_path_factory, s3):
    srv = Server(tmp_path_factory.mktemp("s3vmimport") / "data", env={
        "VMIMPORT_S3_ENDPOINT_URL": s3.endpoint_url, "VMIMPORT_S3_ACCESS_KEY": s3.access_key,
        "VMIMPORT_S3_SECRET_KEY": s3.secret_key,
        "VMIMPORT_URL_ALLOWED_HOSTS": '["127.0.0.1"]', "VMIMPORT_URL_ALLOW_HTTP": "true"}).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("fmt, how", [("vmdk", "bucket"), ("raw", "url"), ("vmdk", "presigned")])
def test_import_from_s3(s3, s3_backed, disks, fmt, how):
    client = s3.client()
    bucket = f"images-{fmt}-{how}"
    client.create_bucket(Bucket=bucket)
    client.upload_file(str(disks[fmt]), bucket, f"exports/disk.{fmt}")
    container = {"Format": fmt}
    if how == "bucket":
        container["UserBucket"] = {"S3Bucket": bucket, "S3Key": f"exports/disk.{fmt}"}
    elif how == "url":
        container["Url"] = f"s3://{bucket}/exports/disk.{fmt}"
    else:
        container["Url"] = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": f"exports/disk.{fmt}"})
    ec2, ebs = s3_backed.client(), s3_backed.client("ebs")
    task = wait_task(ec2, ec2.import_image(DiskContainers=[container])["ImportTaskId"])
    assert task["Status"] == "completed", task
    detail = task["SnapshotDetails"][0]
    if how == "presigned":  # the signature is not shown back
        assert detail["Url"] == f"{s3.endpoint_url}/{bucket}/exports/disk.{fmt}"
    assert detail["DiskImageSize"] == float(disks[fmt].stat().st_size)
    expected, size = qemu_raw_sha256(disks[fmt], fmt)
    assert snapshot_sha256(ebs, detail["SnapshotId"], size) == expected


def test_missing_object_and_wrong_credentials(s3, s3_backed, tmp_path):
    s3.client().create_bucket(Bucket="present")
    ec2 = s3_backed.client()
    task = wait_task(ec2, ec2.import_image(DiskContainers=[
        {"Format": "raw", "UserBucket": {"S3Bucket": "present", "S3Key": "absent.raw"}}])
        ["ImportTaskId"])
    assert task["Status"] == "deleted"
    assert task["StatusMessage"].startswith(
        "ClientError: Disk validation failed [Invalid S3 source location]")
    assert "absent.raw" in task["StatusMessage"]

    wrong = Server(tmp_path / "data", env={
        "VMIMPORT_S3_ENDPOINT_URL": s3.endpoint_url, "VMIMPORT_S3_ACCESS_KEY": s3.access_key,
        "VMIMPORT_S3_SECRET_KEY": "wrong-secret"}).start()
    try:
        s3.client().put_object(Bucket="present", Key="disk.raw", Body=b"\0" * 4096)
        ec2 = wrong.client()
        task = wait_task(ec2, ec2.import_image(DiskContainers=[
            {"Format": "raw", "UserBucket": {"S3Bucket": "present", "S3Key": "disk.raw"}}])
            ["ImportTaskId"])
        assert task["Status"] == "deleted"
        assert "[We do not have access to the given resource. Reason 403 Forbidden]" in \
            task["StatusMessage"]
    finally:
        wrong.stop()
