"""ExportImage end to end against a live server: an AMI imported from a qemu-img-made disk is
exported as VMDK, VHD and RAW; `qemu-img compare` must find each export the same disk as the
imported raw, and re-importing the VMDK gives a snapshot with the same bytes."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from ..helpers import Server, snapshot_sha256, wait_task
from ..s3server import S3Server

EXTENSIONS = {"VMDK": ("vmdk", "vmdk"), "VHD": ("vhd", "vpc"), "RAW": ("raw", "raw")}


def _code(call, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]["Code"]


def wait_export(ec2, task_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id])["ExportImageTasks"][0]
        if task["Status"] in ("completed", "deleted"):
            return task
        assert time.monotonic() < deadline, f"export {task_id} still {task['Status']}: {task}"
        time.sleep(0.2)


def import_ami(server, ec2, raw) -> dict:
    bucket = "export-src-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", raw)
    task = wait_task(ec2, ec2.import_image(DiskContainers=[{
        "Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}}])["ImportTaskId"])
    assert task["Status"] == "completed", task
    return task


@pytest.fixture(scope="module")
def ami(server, ec2, disks) -> dict:
    return import_ami(server, ec2, disks["raw"])


def same_disk(raw, exported, qemu_format) -> None:
    compared = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", qemu_format,
                               str(raw), str(exported)], capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout + compared.stderr


@pytest.mark.parametrize("fmt", sorted(EXTENSIONS))
def test_export_is_the_imported_disk(server, ec2, disks, ami, fmt):
    (server.buckets / "exports").mkdir(exist_ok=True)
    answer = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat=fmt,
                              S3ExportLocation={"S3Bucket": "exports", "S3Prefix": "vms/"},
                              Description="round trip",
                              TagSpecifications=[{"ResourceType": "export-image-task",
                                                  "Tags": [{"Key": "fmt", "Value": fmt}]}])
    task_id = answer["ExportImageTaskId"]
    assert task_id.startswith("export-ami-") and answer["Status"] == "active"
    assert answer["DiskImageFormat"] == fmt and answer["RoleName"] == "vmimport"
    done = wait_export(ec2, task_id)
    assert done["Status"] == "completed", done
    assert done["Tags"] == [{"Key": "fmt", "Value": fmt}]
    assert done["S3ExportLocation"] == {"S3Bucket": "exports", "S3Prefix": "vms/"}
    extension, qemu_format = EXTENSIONS[fmt]
    exported = server.buckets / "exports" / "vms" / f"{task_id}.{extension}"
    same_disk(disks["raw"], exported, qemu_format)
    assert not list((server.buckets / "exports" / ".vmimport-partial").iterdir())
    if fmt == "VMDK":  # and back in: the same bytes as the first import's snapshot
        again = wait_task(ec2, ec2.import_snapshot(DiskContainer={
            "Format": "vmdk", "UserBucket": {"S3Bucket": "exports",
                                             "S3Key": f"vms/{task_id}.vmdk"}})["ImportTaskId"],
            snapshot=True)
        assert again["SnapshotTaskDetail"]["Status"] == "completed", again
        ebs = server.client("ebs")
        size = disks["raw"].stat().st_size
        assert snapshot_sha256(ebs, again["SnapshotTaskDetail"]["SnapshotId"], size) == \
            snapshot_sha256(ebs, ami["SnapshotDetails"][0]["SnapshotId"], size)


def test_describe_filters_and_idempotency(server, ec2, ami):
    (server.buckets / "exports").mkdir(exist_ok=True)
    token = uuid.uuid4().hex
    first = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="RAW", ClientToken=token,
                             S3ExportLocation={"S3Bucket": "exports"})
    again = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="RAW", ClientToken=token,
                             S3ExportLocation={"S3Bucket": "exports"})
    assert again["ExportImageTaskId"] == first["ExportImageTaskId"]
    assert _code(ec2.export_image, ImageId=ami["ImageId"], DiskImageFormat="VHD",
                 ClientToken=token, S3ExportLocation={"S3Bucket": "exports"}) == \
        "IdempotentParameterMismatch"
    wait_export(ec2, first["ExportImageTaskId"])
    completed = ec2.describe_export_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["completed"]}])["ExportImageTasks"]
    assert first["ExportImageTaskId"] in {t["ExportImageTaskId"] for t in completed}
    page = ec2.describe_export_image_tasks(MaxResults=1)
    assert len(page["ExportImageTasks"]) == 1
    assert _code(ec2.describe_export_image_tasks,
                 ExportImageTaskIds=["export-ami-0123456789abcdef0"]) == \
        "InvalidExportTaskID.NotFound"


def test_refusals(server, ec2, ami):
    location = {"S3Bucket": "exports"}
    assert _code(ec2.export_image, ImageId="ami-0123456789abcdef0", DiskImageFormat="RAW",
                 S3ExportLocation=location) == "InvalidAMIID.NotFound"
    assert _code(ec2.export_image, ImageId=ami["ImageId"], DiskImageFormat="RAW",
                 S3ExportLocation={"S3Bucket": "Not_A_Bucket"}) == "InvalidParameterValue"
    assert _code(ec2.export_image, ImageId=ami["ImageId"], DiskImageFormat="RAW",
                 S3ExportLocation=location, RoleName="no-such-role") == "InvalidParameter"
    other = server.client("ec2", "OTHERKEY", "othersecret")
    assert _code(other.export_image, ImageId=ami["ImageId"], DiskImageFormat="RAW",
                 S3ExportLocation=location) == "InvalidAMIID.NotFound"
    assert _code(ec2.export_image, ImageId=ami["ImageId"], DiskImageFormat="RAW",
                 S3ExportLocation=location, DryRun=True) == "DryRunOperation"


def test_missing_bucket_fails_the_task(ec2, ami):
    task = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="RAW",
                            S3ExportLocation={"S3Bucket": "no-such-export-bucket"})
    done = wait_export(ec2, task["ExportImageTaskId"])
    assert done["Status"] == "deleted"
    assert done["StatusMessage"].startswith("ClientError: ")
    assert "no-such-export-bucket" in done["StatusMessage"]


def test_role_without_put_object_fails_the_task(server, ec2, ami):
    iam = server.client("iam")
    name = "export-readonly-" + uuid.uuid4().hex[:6]
    trust = iam.get_role(RoleName="vmimport")["Role"]["AssumeRolePolicyDocument"]
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "s3:GetBucketLocation", "s3:GetBucketAcl", "s3:GetObject"]}]}))
    (server.buckets / "exports").mkdir(exist_ok=True)
    task = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="RAW", RoleName=name,
                            S3ExportLocation={"S3Bucket": "exports"})
    done = wait_export(ec2, task["ExportImageTaskId"])
    assert done["Status"] == "deleted"
    assert "not allowed s3:PutObject on arn:aws:s3:::exports/" in done["StatusMessage"]
    assert not (server.buckets / "exports" / f"{task['ExportImageTaskId']}.raw").exists()


def test_cancel(tmp_path, disks):
    # A server imports the AMI and stops; the same data served with no worker keeps the export
    # queued, so the cancel always finds it active.
    first = Server(tmp_path / "data").start()
    try:
        ami = import_ami(first, first.client(), disks["raw"])
    finally:
        first.stop()
    srv = Server(tmp_path / "data", workers=0, database_url=first.database_url).start()
    try:
        ec2 = srv.client()
        (srv.buckets / "exports").mkdir(exist_ok=True)
        task = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="VMDK",
                                S3ExportLocation={"S3Bucket": "exports"})
        assert _code(ec2.export_image, ImageId=ami["ImageId"], DiskImageFormat="RAW",
                     S3ExportLocation={"S3Bucket": "exports"}) == "IncorrectState"
        ec2.cancel_export_task(ExportTaskId=task["ExportImageTaskId"])
        done = ec2.describe_export_image_tasks(
            ExportImageTaskIds=[task["ExportImageTaskId"]])["ExportImageTasks"][0]
        assert done["Status"] == "deleted" and "Cancelled" in done["StatusMessage"]
        assert _code(ec2.cancel_export_task, ExportTaskId=task["ExportImageTaskId"]) == \
            "IncorrectState"
        assert _code(ec2.cancel_export_task, ExportTaskId="export-ami-0123456789abcdef0") == \
            "InvalidExportTaskID.NotFound"
        assert [p.name for p in (srv.buckets / "exports").iterdir()] == []
    finally:
        srv.stop()


def test_aws_cli_export_image(server, ami):
    (server.buckets / "exports").mkdir(exist_ok=True)
    answer = server.aws("ec2", "export-image", "--image-id", ami["ImageId"],
                        "--disk-image-format", "VHD",
                        "--s3-export-location", "S3Bucket=exports,S3Prefix=cli/")
    described = server.aws("ec2", "describe-export-image-tasks", "--export-image-task-ids",
                           answer["ExportImageTaskId"])
    assert described["ExportImageTasks"][0]["ImageId"] == ami["ImageId"]


def test_export_to_an_s3_store(tmp_path, disks):
    with S3Server(tmp_path / "s3") as s3:
        s3.client().create_bucket(Bucket="exports")
        srv = Server(tmp_path / "data", env={
            "VMIMPORT_S3_ENDPOINT_URL": s3.endpoint_url, "VMIMPORT_S3_ACCESS_KEY": s3.access_key,
            "VMIMPORT_S3_SECRET_KEY": s3.secret_key}).start()
        try:
            ec2 = srv.client()
            ami = import_ami(srv, ec2, disks["raw"])
            task = ec2.export_image(ImageId=ami["ImageId"], DiskImageFormat="VMDK",
                                    S3ExportLocation={"S3Bucket": "exports", "S3Prefix": "x/"})
            done = wait_export(ec2, task["ExportImageTaskId"])
            assert done["Status"] == "completed", done
            out = tmp_path / "exported.vmdk"
            s3.client().download_file("exports", f"x/{task['ExportImageTaskId']}.vmdk", str(out))
            same_disk(disks["raw"], out, "vmdk")
        finally:
            srv.stop()
