"""Requests the server must refuse at once (with the EC2 code a client expects) or answer
without starting any work: validation, auth, idempotency, DryRun, paging, tags, accounts."""

from __future__ import annotations

import contextlib
import sys
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from unittest import mock

import botocore.auth
import pytest
from botocore.exceptions import ClientError

from ..helpers import Server, wait_task


def _code(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"]


def _disk(bucket="bkt", key="k.raw", **extra):
    return {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": key}, **extra}


LICENSE_ARN = ("arn:aws:license-manager:us-east-1:000000000000:license-configuration:"
               "lic-0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("params, code", [
    ({}, "MissingParameter"),
    ({"DiskContainers": [{"Format": "raw"}]}, "MissingParameter"),
    ({"DiskContainers": [{"Format": "raw", "UserBucket": {"S3Bucket": "bkt"}}]},
     "MissingParameter"),
    ({"DiskContainers": [_disk(Url="s3://bkt/k")]}, "InvalidParameterCombination"),
    ({"DiskContainers": [_disk()] * 22}, "InvalidParameter"),
    ({"DiskContainers": [_disk(Format="vdi")]}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk(DeviceName="sda")]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "ftp://host/x"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"SnapshotId": "vol-123"}]}, "InvalidSnapshotID.Malformed"),
    ({"DiskContainers": [_disk()], "Architecture": "arm64"}, "InvalidParameter"),
    ({"DiskContainers": [_disk()], "Architecture": "sparc"}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "BootMode": "uefi-preferred"}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "Platform": "Solaris"}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "Hypervisor": "kvm"}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "LicenseType": "Free"}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "LicenseType": "BYOL", "UsageOperation": "RunInstances"},
     "InvalidParameterCombination"),
    ({"DiskContainers": [_disk()], "UsageOperation": "RunInstances:9999"},
     "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "KmsKeyId": "alias/x"}, "InvalidParameterCombination"),
    ({"DiskContainers": [_disk()], "Encrypted": True, "KmsKeyId": "not a key"},
     "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "LicenseSpecifications": [
        {"LicenseConfigurationArn": "arn:nope"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "TagSpecifications": [
        {"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}]},
     "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "TagSpecifications": [
        {"ResourceType": "import-image-task", "Tags": [{"Key": "aws:x", "Value": "b"}]}]},
     "InvalidParameterValue"),
    ({"DiskContainers": [_disk()], "ClientToken": "x" * 65}, "InvalidParameterValue"),
])
def test_import_image_refusals(ec2, params, code):
    assert _code(ec2.import_image, **params) == code


def test_arm64_message_matches_aws(ec2):
    with pytest.raises(ClientError) as err:
        ec2.import_image(DiskContainers=[_disk()], Architecture="arm64")
    assert err.value.response["Error"]["Message"].startswith(
        "Parameter architecture=arm64 has an invalid format")


def test_all_twenty_parameters_accepted_and_recorded(ec2):
    token = uuid.uuid4().hex
    task = ec2.import_image(
        Architecture="x86_64", BootMode="legacy-bios",
        ClientData={"Comment": "c", "UploadStart": datetime(2024, 1, 1, tzinfo=timezone.utc),
                    "UploadEnd": datetime(2024, 1, 2, tzinfo=timezone.utc), "UploadSize": 1.5},
        ClientToken=token, Description="all", DiskContainers=[_disk(
            "nobucket-" + token[:8], DeviceName="/dev/sda1", Description="d")],
        DryRun=False, Encrypted=False, Hypervisor="xen", LicenseType="BYOL",
        Platform="Linux", RoleName="vmimport",
        LicenseSpecifications=[{"LicenseConfigurationArn": LICENSE_ARN}],
        TagSpecifications=[{"ResourceType": "import-image-task",
                            "Tags": [{"Key": "team", "Value": "infra"}]}])
    assert task["Architecture"] == "x86_64"
    assert task["Platform"] == "Linux"
    assert task["LicenseType"] == "BYOL"
    assert task["Hypervisor"] == "xen"
    assert task["Encrypted"] is False
    assert task["LicenseSpecifications"] == [{"LicenseConfigurationArn": LICENSE_ARN}]
    assert task["Tags"] == [{"Key": "team", "Value": "infra"}]
    described = ec2.describe_import_image_tasks(ImportTaskIds=[task["ImportTaskId"]])
    assert described["ImportImageTasks"][0]["BootMode"] == "legacy-bios"
    # The bucket does not exist: the task ends with a ClientError naming it.
    done = wait_task(ec2, task["ImportTaskId"])
    assert done["Status"] == "deleted"
    assert "nobucket-" in done["StatusMessage"]


def test_encrypted_import_uses_the_default_ebs_key(server, ec2, disks):
    server.put_object("enc", "disk.raw", disks["raw"])
    task = ec2.import_image(DiskContainers=[_disk("enc", "disk.raw")], Encrypted=True)
    done = wait_task(ec2, task["ImportTaskId"], timeout=300)
    assert done["Status"] == "completed", done
    default = server.client("kms").describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    assert done["Encrypted"] is True and done["KmsKeyId"] == default


def test_client_token_idempotency(ec2):
    token = uuid.uuid4().hex
    bucket = "idem-" + token[:8]
    first = ec2.import_image(ClientToken=token, DiskContainers=[_disk(bucket)])
    again = ec2.import_image(ClientToken=token, DiskContainers=[_disk(bucket)])
    assert again["ImportTaskId"] == first["ImportTaskId"]
    assert _code(ec2.import_image, ClientToken=token,
                 DiskContainers=[_disk(bucket, "other.raw")]) == "IdempotentParameterMismatch"


def test_dry_run(server, ec2):
    assert _code(ec2.import_image, DryRun=True, DiskContainers=[_disk()]) == "DryRunOperation"
    assert _code(ec2.describe_images, DryRun=True) == "DryRunOperation"
    readonly = server.client("ec2", "READONLY", "readonlysecret")
    assert _code(readonly.import_image, DryRun=True,
                 DiskContainers=[_disk()]) == "UnauthorizedOperation"
    assert _code(readonly.import_image, DiskContainers=[_disk()]) == "UnauthorizedOperation"
    assert _code(readonly.describe_images, DryRun=True) == "DryRunOperation"
    assert readonly.describe_images()["Images"] is not None


def test_auth_failures(server):
    wrong = server.client("ec2", "test", "not-the-secret")
    assert _code(wrong.describe_images) == "SignatureDoesNotMatch"
    unknown = server.client("ec2", "NOSUCHKEY", "x")
    assert _code(unknown.describe_images) == "AuthFailure"
    skewed = server.client("ec2")
    past = datetime.now(timezone.utc) - timedelta(minutes=20)
    # botocore signs with awscrt when it is installed (a vmimport dependency): both clocks
    with contextlib.ExitStack() as clocks:
        for module in (botocore.auth, sys.modules.get("botocore.crt.auth")):
            if module is not None:
                clocks.enter_context(mock.patch.object(
                    module, "get_current_datetime",
                    lambda *a, remove_tzinfo=True, **k: past.replace(tzinfo=None)
                    if remove_tzinfo else past))
        assert _code(skewed.describe_images) == "AuthFailure"
    # No signature at all.
    body = b"Action=DescribeImages&Version=2016-11-15"
    request = urllib.request.Request(server.endpoint + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 401
    assert b"<Code>AuthFailure</Code>" in err.value.read()


def test_cli_wrong_secret(server):
    proc = server.aws("ec2", "describe-images", secret_key="wrong", check=False)
    assert proc.returncode != 0
    assert "SignatureDoesNotMatch" in proc.stderr


def test_unknown_and_unsupported_actions(server, ec2):
    assert _code(ec2.describe_instances) == "UnsupportedOperation"
    proc = server.aws("ec2", "run-instances", "--image-id", "ami-12345678", check=False)
    assert "UnsupportedOperation" in proc.stderr
    # An action EC2 does not have at all.
    ec2.meta.events.register_first(
        "before-call.ec2.DescribeImages",
        lambda params, **kw: params["body"].update({"Action": "FlyToTheMoon"}),
        unique_id="fly")
    try:
        assert _code(ec2.describe_images) == "InvalidAction"
    finally:
        ec2.meta.events.unregister("before-call.ec2.DescribeImages", unique_id="fly")


def test_unknown_parameter(ec2):
    ec2.meta.events.register_first(
        "before-call.ec2.DescribeImages",
        lambda params, **kw: params["body"].update({"Bogus": "1"}), unique_id="bogus")
    try:
        assert _code(ec2.describe_images) == "UnknownParameter"
    finally:
        ec2.meta.events.unregister("before-call.ec2.DescribeImages", unique_id="bogus")


def test_accounts_see_only_their_own(server, ec2):
    task = ec2.import_image(DiskContainers=[_disk("acct-" + uuid.uuid4().hex[:6])])
    other = server.client("ec2", "OTHERKEY", "othersecret")
    assert _code(other.describe_import_image_tasks,
                 ImportTaskIds=[task["ImportTaskId"]]) == "InvalidConversionTaskId"
    assert all(t["ImportTaskId"] != task["ImportTaskId"]
               for t in other.describe_import_image_tasks()["ImportImageTasks"])
    assert _code(other.cancel_import_task,
                 ImportTaskId=task["ImportTaskId"]) == "InvalidConversionTaskId"
    assert _code(other.create_tags, Resources=[task["ImportTaskId"]],
                 Tags=[{"Key": "a", "Value": "b"}]) == "InvalidID"


def test_paging_and_task_state_filter(server):
    # A fresh account so the count is exact; it starts with no vmimport role (issue 5).
    other = server.client("ec2", "OTHERKEY", "othersecret")
    iam = server.client("iam", "OTHERKEY", "othersecret")
    try:
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument=(
            '{"Statement": [{"Effect": "Allow", "Principal": {"Service": '
            '"vmie.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'))
    except ClientError as err:
        assert err.response["Error"]["Code"] == "EntityAlreadyExists"
    ids = [other.import_image(DiskContainers=[_disk("page-" + uuid.uuid4().hex[:6])])
           ["ImportTaskId"] for _ in range(5)]
    seen, token = [], None
    while True:
        kwargs = {"MaxResults": 2, **({"NextToken": token} if token else {})}
        page = other.describe_import_image_tasks(**kwargs)
        assert len(page["ImportImageTasks"]) <= 2
        seen += [t["ImportTaskId"] for t in page["ImportImageTasks"]]
        token = page.get("NextToken")
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    paginator = other.get_paginator("describe_import_image_tasks")
    all_ids = [t["ImportTaskId"] for p in paginator.paginate(PaginationConfig={"PageSize": 3})
               for t in p["ImportImageTasks"]]
    assert all_ids == seen
    for task_id in ids:
        wait_task(other, task_id)
    deleted = other.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["deleted"]}])["ImportImageTasks"]
    assert set(ids) <= {t["ImportTaskId"] for t in deleted}
    active = other.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["active"]}])["ImportImageTasks"]
    assert not set(ids) & {t["ImportTaskId"] for t in active}
    assert _code(other.describe_import_image_tasks, NextToken="garbage!") == "InvalidNextToken"


def test_cancel_queued_task_and_refuse_second_cancel(tmp_path):
    idle = Server(tmp_path / "data", workers=0).start()  # no worker: the task stays queued
    try:
        _cancel_queued(idle.client())
    finally:
        idle.stop()


def _cancel_queued(ec2):
    task = ec2.import_image(DiskContainers=[_disk("cancel-" + uuid.uuid4().hex[:6])])
    answer = ec2.cancel_import_task(ImportTaskId=task["ImportTaskId"], CancelReason="changed mind")
    assert answer["PreviousState"] == "active" and answer["State"] == "deleting"
    done = wait_task(ec2, task["ImportTaskId"])
    assert done["Status"] == "deleted"
    assert "changed mind" in done["StatusMessage"]
    assert _code(ec2.cancel_import_task, ImportTaskId=task["ImportTaskId"]) == "IncorrectState"


def test_tags_on_tasks_images_snapshots(server, ec2, disks):
    bucket = "tags-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", disks["raw"])
    task = wait_task(ec2, ec2.import_image(DiskContainers=[_disk(bucket, "disk.raw")])
                     ["ImportTaskId"])
    image_id, snapshot_id = task["ImageId"], task["SnapshotDetails"][0]["SnapshotId"]
    ec2.create_tags(Resources=[task["ImportTaskId"], image_id, snapshot_id],
                    Tags=[{"Key": "env", "Value": "test"}, {"Key": "owner", "Value": bucket}])
    images = ec2.describe_images(Filters=[{"Name": "tag:owner", "Values": [bucket]}])["Images"]
    assert [i["ImageId"] for i in images] == [image_id]
    assert {"Key": "env", "Value": "test"} in images[0]["Tags"]
    snaps = ec2.describe_snapshots(Filters=[{"Name": "tag:owner", "Values": [bucket]}])
    assert [s["SnapshotId"] for s in snaps["Snapshots"]] == [snapshot_id]
    described = ec2.describe_tags(Filters=[{"Name": "value", "Values": [bucket]}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"]) for t in described} == {
        (task["ImportTaskId"], "import-image-task"), (image_id, "image"),
        (snapshot_id, "snapshot")}
    ec2.delete_tags(Resources=[image_id], Tags=[{"Key": "owner"}])
    assert ec2.describe_images(Filters=[{"Name": "tag:owner", "Values": [bucket]}])[
        "Images"] == []
    described = server.aws("ec2", "describe-tags", "--filters",
                           f"Name=resource-id,Values={snapshot_id}")["Tags"]
    assert {t["Key"] for t in described} == {"env", "owner"}


def test_deregister_and_delete_snapshot(server, ec2, disks):
    bucket = "dereg-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", disks["raw"])
    task = wait_task(ec2, ec2.import_image(DiskContainers=[_disk(bucket, "disk.raw")])
                     ["ImportTaskId"])
    image_id, snapshot_id = task["ImageId"], task["SnapshotDetails"][0]["SnapshotId"]
    assert _code(ec2.delete_snapshot, SnapshotId=snapshot_id) == "InvalidSnapshot.InUse"
    result = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    assert result["DeleteSnapshotResults"] == [{"SnapshotId": snapshot_id,
                                                "ReturnCode": "success"}]
    assert _code(ec2.describe_images, ImageIds=[image_id]) == "InvalidAMIID.Unavailable"
    assert _code(ec2.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
    assert _code(ec2.deregister_image, ImageId=image_id) == "InvalidAMIID.NotFound"


def test_delete_unused_snapshot(server, ec2, disks):
    bucket = "delsnap-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", disks["raw"])
    task = wait_task(ec2, ec2.import_image(DiskContainers=[_disk(bucket, "disk.raw")])
                     ["ImportTaskId"])
    snapshot_id = task["SnapshotDetails"][0]["SnapshotId"]
    ec2.deregister_image(ImageId=task["ImageId"])
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert _code(ec2.describe_snapshots, SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"


def test_presigned_query_string_auth(server, ec2):
    url = ec2.generate_presigned_url("describe_images", Params={"Owners": ["self"]},
                                     HttpMethod="GET", ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert b"<DescribeImagesResponse" in response.read()
    tampered = url.replace("Owner.1=self", "Owner.1=000000000000")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert b"SignatureDoesNotMatch" in err.value.read()


def test_describe_snapshots_and_images_paging(server, ec2, disks):
    bucket = "pg-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", disks["raw"])
    for _ in range(2):
        wait_task(ec2, ec2.import_image(DiskContainers=[_disk(bucket, "disk.raw")])
                  ["ImportTaskId"])
    images = [i["ImageId"] for p in ec2.get_paginator("describe_images").paginate(
        Owners=["self"], PaginationConfig={"PageSize": 1}) for i in p["Images"]]
    assert len(images) == len(set(images)) >= 2
    snaps = [s["SnapshotId"] for p in ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], PaginationConfig={"PageSize": 5}) for s in p["Snapshots"]]
    assert len(snaps) == len(set(snaps)) >= 2
    assert ec2.describe_images(Owners=["amazon"])["Images"] == []
