"""Image and snapshot attributes and sharing between accounts, with EC2's semantics: account
000000000000 (key ``test``) owns the AMIs, 111111111111 (key ``OTHERKEY``) is given them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from vmimport.db.models import Image
from vmimport.db.session import Database

from ..conftest import CREDENTIALS
from ..helpers import Server, wait_task
from .ami_fixtures import error_code, new_ami

OTHER = "111111111111"


@pytest.fixture
def other(server):
    return server.client("ec2", access_key="OTHERKEY", secret_key="othersecret")


@pytest.fixture
def ami(server, ec2, tmp_path):
    return new_ami(server, ec2, tmp_path)


def ids(answer) -> list[str]:
    return [i["ImageId"] for i in answer["Images"]]


def test_description_and_attributes_clients_read(server, ec2, ami):
    image_id = ami["ImageId"]
    ec2.modify_image_attribute(ImageId=image_id, Description={"Value": "built by packer"})
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="description")[
        "Description"] == {"Value": "built by packer"}
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Description"] == \
        "built by packer"
    # The AWS CLI's older form: Attribute + Value.
    server.aws("ec2", "modify-image-attribute", "--image-id", image_id,
               "--attribute", "description", "--value", "second")
    assert server.aws("ec2", "describe-image-attribute", "--image-id", image_id,
                      "--attribute", "description")["Description"] == {"Value": "second"}
    mappings = ec2.describe_image_attribute(ImageId=image_id, Attribute="blockDeviceMapping")
    assert mappings["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == ami["SnapshotId"]
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="sriovNetSupport")[
        "SriovNetSupport"] == {"Value": "simple"}
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="productCodes")[
        "ProductCodes"] == []
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")[
        "LaunchPermissions"] == []
    assert error_code(ec2.describe_image_attribute, ImageId=image_id,
                      Attribute="nonsense") == "InvalidParameterValue"
    assert error_code(ec2.modify_image_attribute, ImageId=image_id,
                      ProductCodes=["abc"]) == "InvalidParameter"


def test_share_with_an_account_then_revoke(server, ec2, other, ami):
    image_id = ami["ImageId"]
    assert image_id not in ids(other.describe_images())
    assert error_code(other.describe_images, ImageIds=[image_id]) == "InvalidAMIID.NotFound"

    ec2.modify_image_attribute(ImageId=image_id,
                               LaunchPermission={"Add": [{"UserId": OTHER}]})
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")[
        "LaunchPermissions"] == [{"UserId": OTHER}]
    seen = other.describe_images(ImageIds=[image_id])["Images"][0]
    assert seen["OwnerId"] == "000000000000" and seen["Public"] is False
    assert image_id in ids(other.describe_images(ExecutableUsers=["self"]))
    assert image_id in ids(other.describe_images(Owners=["000000000000"]))
    assert image_id not in ids(other.describe_images(Owners=["self"]))
    assert image_id in ids(ec2.describe_images(ExecutableUsers=[OTHER]))
    # The owner's rights stay the owner's.
    assert error_code(other.deregister_image, ImageId=image_id) == "AuthFailure"
    assert error_code(other.modify_image_attribute, ImageId=image_id,
                      Description={"Value": "mine now"}) == "AuthFailure"
    assert error_code(other.describe_image_attribute, ImageId=image_id,
                      Attribute="launchPermission") == "AuthFailure"
    assert error_code(other.create_tags, Resources=[image_id],
                      Tags=[{"Key": "k", "Value": "v"}]) == "InvalidAMIID.NotFound"
    assert error_code(other.export_image, ImageId=image_id, DiskImageFormat="RAW",
                      S3ExportLocation={"S3Bucket": "bucket"}) == "AuthFailure"
    # ... but B may copy it: the copy is B's, its snapshots readable by B.
    copy_id = other.copy_image(Name=f"b-copy-{uuid.uuid4().hex[:6]}", SourceImageId=image_id,
                               SourceRegion="us-east-1")["ImageId"]
    copy = other.describe_images(ImageIds=[copy_id])["Images"][0]
    assert copy["OwnerId"] == OTHER and copy["SourceImageId"] == image_id
    copied_snapshot = copy["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert other.describe_snapshots(SnapshotIds=[copied_snapshot])["Snapshots"][0][
        "OwnerId"] == OTHER
    blocks = server.client("ebs", access_key="OTHERKEY", secret_key="othersecret") \
        .list_snapshot_blocks(SnapshotId=copied_snapshot)["Blocks"]
    assert [b["BlockIndex"] for b in blocks] == [0, 5]

    ec2.modify_image_attribute(ImageId=image_id,
                               LaunchPermission={"Remove": [{"UserId": OTHER}]})
    assert error_code(other.describe_images, ImageIds=[image_id]) == "InvalidAMIID.NotFound"
    assert error_code(other.copy_image, Name="again", SourceImageId=image_id,
                      SourceRegion="us-east-1") == "InvalidAMIID.NotFound"


def test_public_image_and_reset(server, ec2, other, ami):
    image_id = ami["ImageId"]
    server.aws("ec2", "modify-image-attribute", "--image-id", image_id,
               "--launch-permission", "Add=[{Group=all}]")
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Public"] is True
    public = other.describe_images(ExecutableUsers=["all"])
    assert image_id in ids(public)
    assert image_id in ids(other.describe_images(Filters=[{"Name": "is-public",
                                                           "Values": ["true"]}]))
    assert image_id not in ids(other.describe_images(ExecutableUsers=["self"]))
    ec2.reset_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Public"] is False
    assert image_id not in ids(other.describe_images())
    assert error_code(ec2.modify_image_attribute, ImageId=image_id, LaunchPermission={
        "Add": [{"UserId": "12345"}]}) == "InvalidParameterValue"
    assert error_code(ec2.modify_image_attribute, ImageId=image_id, LaunchPermission={
        "Add": [{"Group": "everyone"}]}) in ("InvalidParameterValue", "ValidationError")


def test_legacy_operation_type_form(server, ec2, other, ami):
    image_id = ami["ImageId"]
    ec2.modify_image_attribute(ImageId=image_id, Attribute="launchPermission",
                               OperationType="add", UserIds=[OTHER])
    assert image_id in ids(other.describe_images(ExecutableUsers=["self"]))
    ec2.modify_image_attribute(ImageId=image_id, Attribute="launchPermission",
                               OperationType="remove", UserIds=[OTHER])
    assert image_id not in ids(other.describe_images())


def test_snapshot_create_volume_permission(server, ec2, other, ami):
    snapshot_id = ami["SnapshotId"]
    attribute = ec2.describe_snapshot_attribute(SnapshotId=snapshot_id,
                                                Attribute="createVolumePermission")
    assert attribute == {**attribute, "SnapshotId": snapshot_id, "CreateVolumePermissions": []}
    assert error_code(other.describe_snapshots,
                      SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[OTHER])
    assert ec2.describe_snapshot_attribute(
        SnapshotId=snapshot_id, Attribute="createVolumePermission")[
        "CreateVolumePermissions"] == [{"UserId": OTHER}]
    shared = other.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]
    assert snapshot_id in [s["SnapshotId"] for s in shared]
    assert snapshot_id not in [s["SnapshotId"] for s in other.describe_snapshots(
        OwnerIds=["self"])["Snapshots"]]
    assert error_code(other.delete_snapshot, SnapshotId=snapshot_id) == "AuthFailure"
    assert error_code(other.modify_snapshot_attribute, SnapshotId=snapshot_id,
                      CreateVolumePermission={"Add": [{"Group": "all"}]}) == "AuthFailure"
    ec2.reset_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
    assert error_code(other.describe_snapshots,
                      SnapshotIds=[snapshot_id]) == "InvalidSnapshot.NotFound"
    assert error_code(ec2.describe_snapshot_attribute, SnapshotId=snapshot_id,
                      Attribute="volumeSize") in ("InvalidParameterValue", "ValidationError")


def test_deregistration_protection(server, ec2, ami):
    image_id = ami["ImageId"]
    assert ec2.enable_image_deregistration_protection(ImageId=image_id)[
        "Return"] == "enabled-without-cooldown"
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0][
        "DeregistrationProtection"] == "enabled-without-cooldown"
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="deregistrationProtection")[
        "DeregistrationProtection"] == {"Value": "enabled-without-cooldown"}
    assert error_code(ec2.deregister_image, ImageId=image_id) == "InvalidParameterValue"
    assert ec2.disable_image_deregistration_protection(ImageId=image_id)["Return"] == "disabled"
    ec2.deregister_image(ImageId=image_id)
    assert error_code(ec2.describe_images, ImageIds=[image_id]) == "InvalidAMIID.Unavailable"


def test_protection_with_cooldown_outlasts_its_disabling(server, ec2, ami):
    image_id = ami["ImageId"]
    ec2.enable_image_deregistration_protection(ImageId=image_id, WithCooldown=True)
    state = ec2.disable_image_deregistration_protection(ImageId=image_id)["Return"]
    assert state.startswith("disabled-until ")
    assert error_code(ec2.deregister_image, ImageId=image_id) == "InvalidParameterValue"


@pytest.fixture
def own_server(tmp_path):
    """A server of its own: the import tasks this makes in account 111111111111 would upset
    tests that count that account's tasks."""
    srv = Server(tmp_path / "data", env={"VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS)}).start()
    yield srv
    srv.stop()


def test_shared_snapshot_is_an_import_source_until_revoked(own_server, disks):
    server = own_server
    ec2 = server.client("ec2")
    other = server.client("ec2", access_key="OTHERKEY", secret_key="othersecret")
    server.client("iam", "OTHERKEY", "othersecret").create_role(
        RoleName="vmimport", AssumeRolePolicyDocument=json.dumps({"Statement": [{
            "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))
    bucket = "shared-src-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "boot.raw", disks["raw"])
    task_id = ec2.import_snapshot(DiskContainer={
        "Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": "boot.raw"}})["ImportTaskId"]
    snapshot_id = wait_task(ec2, task_id, snapshot=True)["SnapshotTaskDetail"]["SnapshotId"]

    def import_from_it() -> dict:
        task_id = other.import_image(DiskContainers=[{"SnapshotId": snapshot_id}])["ImportTaskId"]
        return wait_task(other, task_id)

    refused = import_from_it()
    assert refused["Status"] == "deleted" and "does not exist" in refused["StatusMessage"]
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, CreateVolumePermission={
        "Add": [{"UserId": OTHER}]})
    task = import_from_it()
    assert task["Status"] == "completed", task
    image = other.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert image["OwnerId"] == OTHER
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, CreateVolumePermission={
        "Remove": [{"UserId": OTHER}]})
    assert import_from_it()["Status"] == "deleted"


def test_deprecation_hides_shared_images_unless_asked(server, ec2, other, ami):
    image_id = ami["ImageId"]
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": OTHER}]})
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    assert ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=soon)["Return"] is True
    shown = ec2.describe_images(ImageIds=[image_id])["Images"][0]["DeprecationTime"]
    # EC2 keeps whole minutes (rounded, so an hour's edge may move): within a minute of it
    assert shown.endswith(":00.000Z")
    assert abs(datetime.fromisoformat(shown.replace("Z", "+00:00")) - soon) <= timedelta(minutes=1)
    assert image_id in ids(other.describe_images(ExecutableUsers=["self"]))  # not yet
    assert error_code(ec2.enable_image_deprecation, ImageId=image_id,
                      DeprecateAt=datetime.now(timezone.utc) - timedelta(hours=1)) \
        == "InvalidParameterValue"
    assert error_code(other.enable_image_deprecation, ImageId=image_id,
                      DeprecateAt=soon) == "AuthFailure"

    # The deprecation time passes (set in the database: no test waits for a clock).
    db = Database(server.database_url or f"sqlite:///{server.data_dir / 'vmimport.db'}")
    try:
        with db.write() as session:
            session.execute(update(Image).where(Image.id == image_id).values(
                deprecation_time=datetime.now(timezone.utc) - timedelta(minutes=1)))
    finally:
        db.dispose()
    assert image_id not in ids(other.describe_images(ExecutableUsers=["self"]))
    assert image_id in ids(other.describe_images(ExecutableUsers=["self"],
                                                 IncludeDeprecated=True))
    assert ids(other.describe_images(ImageIds=[image_id])) == [image_id]
    assert image_id in ids(ec2.describe_images(Owners=["self"]))  # the owner always sees it
    ec2.disable_image_deprecation(ImageId=image_id)
    assert "DeprecationTime" not in ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image_id in ids(other.describe_images(ExecutableUsers=["self"]))
