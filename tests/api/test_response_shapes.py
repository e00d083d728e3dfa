"""Every served EC2 action answers in its botocore output shape: each response body of a
scenario that calls them all is walked against the model (``tests/shape_check.py``: no unknown
member, values of the right type, required members present), and the members clients read
are there. An API-only server and a worker started and stopped around it keep the tasks that
are cancelled pending."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from vmimport.api.actions import EC2_ACTIONS

from ..conftest import CREDENTIALS
from ..helpers import Server
from ..shape_check import check_response
from .ami_fixtures import new_ami, wait_image

OTHER = "111111111111"
# What Packer, Ansible and the AWS CLI's waiters read: present whenever the object is shown.
RELIED_ON = {
    "Images": ("ImageId", "State", "OwnerId", "Name", "CreationDate", "BlockDeviceMappings",
               "RootDeviceName", "RootDeviceType", "VirtualizationType", "Architecture",
               "ImageType", "Public", "PlatformDetails", "UsageOperation", "Hypervisor"),
    "Snapshots": ("SnapshotId", "State", "OwnerId", "VolumeSize", "StartTime", "Encrypted",
                  "Progress", "VolumeId"),
    "ImportImageTasks": ("ImportTaskId", "Status", "Progress", "StatusMessage",
                         "SnapshotDetails"),
    "ImportSnapshotTasks": ("ImportTaskId", "SnapshotTaskDetail"),
    "ExportImageTasks": ("ExportImageTaskId", "Status", "ImageId", "S3ExportLocation"),
    "Regions": ("RegionName", "Endpoint"),
    "AvailabilityZones": ("ZoneName", "State", "RegionName"),
}


def _recorder(client, problems: dict[str, list[str]], seen: set[str],
              service: str = "ec2"):
    def check(operation_model, response_dict, **_):
        if response_dict["status_code"] < 300:
            seen.add(operation_model.name)
            found = check_response(operation_model, response_dict["body"])
            if found:
                problems[operation_model.name] = found
    client.meta.events.register(f"before-parse.{service}.*", check)

    def relied_on(http_response, parsed, model, **_):
        if http_response.status_code >= 300:
            return
        for key, members in RELIED_ON.items():
            for index, item in enumerate(parsed.get(key) or []):
                missing = [m for m in members if m not in item]
                if missing:
                    problems.setdefault(model.name, []).append(
                        f"{key}[{index}] lacks {missing}")
    client.meta.events.register("after-call.ec2.*", relied_on)


def _scenario(api, ec2, tmp_path, worker_factory) -> None:
    worker = worker_factory().start()
    ami = new_ami(api, ec2, tmp_path)
    spare = new_ami(api, ec2, tmp_path)
    worker.stop()
    image_id, snapshot_id = ami["ImageId"], ami["SnapshotId"]
    bucket = "shapes-" + uuid.uuid4().hex[:8]
    api.put_object(bucket, "disk.raw", b"\0" * 1024 * 1024)

    ec2.describe_regions()
    ec2.describe_availability_zones()
    ec2.describe_account_attributes()
    ec2.describe_conversion_tasks()
    ec2.describe_import_snapshot_tasks()
    ec2.describe_images(ImageIds=[image_id])
    ec2.describe_images(Owners=["self"])
    ec2.describe_snapshots(OwnerIds=["self"])
    ec2.create_tags(Resources=[image_id, snapshot_id], Tags=[{"Key": "k", "Value": "v"}])
    ec2.describe_tags()
    ec2.delete_tags(Resources=[snapshot_id], Tags=[{"Key": "k"}])
    ec2.modify_image_attribute(ImageId=image_id, Description={"Value": "shapes"})
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": OTHER}]})
    for attribute in ("description", "kernel", "ramdisk", "launchPermission", "productCodes",
                      "blockDeviceMapping", "sriovNetSupport", "bootMode", "tpmSupport",
                      "uefiData", "lastLaunchedTime", "imdsSupport",
                      "deregistrationProtection"):
        ec2.describe_image_attribute(ImageId=image_id, Attribute=attribute)
    ec2.reset_image_attribute(ImageId=image_id, Attribute="launchPermission")
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[OTHER])
    ec2.describe_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
    ec2.describe_snapshot_attribute(SnapshotId=snapshot_id, Attribute="productCodes")
    ec2.reset_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
    ec2.enable_image_deregistration_protection(ImageId=image_id, WithCooldown=True)
    ec2.disable_image_deregistration_protection(ImageId=image_id)
    soon = datetime.now(timezone.utc) + timedelta(days=30)
    ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=soon)
    ec2.describe_images(ImageIds=[image_id])
    ec2.disable_image_deprecation(ImageId=image_id)

    plain = ec2.copy_image(Name="shapes-copy", SourceImageId=image_id,
                           SourceRegion="us-east-1", CopyImageTags=True)["ImageId"]
    pending = ec2.copy_image(Name="shapes-enc", SourceImageId=image_id,
                             SourceRegion="us-east-1", Encrypted=True)["ImageId"]
    ec2.describe_images(ImageIds=[plain, pending])
    task = ec2.import_image(DiskContainers=[{
        "Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}}])
    ec2.describe_import_image_tasks(ImportTaskIds=[task["ImportTaskId"]])
    ec2.cancel_import_task(ImportTaskId=task["ImportTaskId"])
    export = ec2.export_image(ImageId=image_id, DiskImageFormat="VMDK",
                              S3ExportLocation={"S3Bucket": bucket, "S3Prefix": "out/"})
    ec2.describe_export_image_tasks(ExportImageTaskIds=[export["ExportImageTaskId"]])
    ec2.cancel_export_task(ExportTaskId=export["ExportImageTaskId"])
    ec2.describe_export_image_tasks()
    ec2.deregister_image(ImageId=spare["ImageId"])
    ec2.delete_snapshot(SnapshotId=spare["SnapshotId"])
    ec2.register_image(Name="shapes-again", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}])

    worker = worker_factory().start()  # the encrypted copy ends: its answers once available
    assert wait_image(ec2, pending)["State"] == "available"
    ec2.describe_snapshots(OwnerIds=["self"])
    worker.stop()


def test_every_served_ec2_action_answers_in_its_shape(tmp_path):
    env = {"VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS)}
    api = Server(tmp_path / "data", env=env, workers=0).start()
    workers: list[Server] = []

    def worker_factory() -> Server:
        workers.append(Server(tmp_path / "data", env=env, command="worker", workers=1,
                              database_url=api.database_url))
        return workers[-1]

    try:
        ec2 = api.client("ec2")
        problems: dict[str, list[str]] = {}
        seen: set[str] = set()
        _recorder(ec2, problems, seen)
        _scenario(api, ec2, tmp_path, worker_factory)
    finally:
        for worker in workers:
            worker.stop()
        api.stop()
    assert set(EC2_ACTIONS) - seen == set(), "served actions the scenario did not call"
    assert problems == {}, json.dumps(problems, indent=1)


def test_every_served_iam_and_sts_action_answers_in_its_shape(server):
    """The Query-protocol services, the same way: each answer's <XResult> walked."""
    from vmimport.api.actions import IAM_ACTIONS, STS_ACTIONS

    problems: dict[str, list[str]] = {}
    seen: set[str] = set()
    iam, sts = server.client("iam"), server.client("sts")
    for client, service in ((iam, "iam"), (sts, "sts")):
        _recorder(client, problems, seen, service)
    name = "shapes-" + uuid.uuid4().hex[:8]
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "000000000000"}, "Action": "sts:AssumeRole"}]}
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                          Description="shapes")["Role"]["Arn"]
    iam.get_role(RoleName=name)
    iam.list_roles()
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    iam.get_role_policy(RoleName=name, PolicyName="p")
    iam.list_role_policies(RoleName=name)
    sts.get_caller_identity()
    sts.get_session_token()
    sts.assume_role(RoleArn=arn, RoleSessionName="shapes")
    iam.delete_role_policy(RoleName=name, PolicyName="p")
    iam.delete_role(RoleName=name)
    assert (set(IAM_ACTIONS) | set(STS_ACTIONS)) - seen == set()
    assert problems == {}, json.dumps(problems, indent=1)


def test_the_check_can_fail():
    """A response with an unknown member, a wrong type and a list item misnamed."""
    import botocore.session

    from ..shape_check import check_response
    operation = botocore.session.get_session().get_service_model("ec2").operation_model(
        "DescribeImages")
    body = (b'<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            b"<requestId>r</requestId><imagesSet><item><imageId>ami-1</imageId>"
            b"<isPublic>yes</isPublic><colour>red</colour></item><image/></imagesSet>"
            b"</DescribeImagesResponse>")
    problems = check_response(operation, body)
    assert any("<colour>" in p for p in problems)
    assert any("boolean 'yes'" in p for p in problems)
    assert any("<image>" in p for p in problems)
