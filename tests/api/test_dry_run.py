"""DryRun does what the real call does up to its effect: parameter checks, existence and
ownership, authorization; ``DryRunOperation`` only when the call would have succeeded, and
then nothing changed. Every served EC2 action that accepts DryRun is exercised."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from .ami_fixtures import error_code, error_of, new_ami

MISSING_AMI = "ami-0123456789abcdef0"
MISSING_SNAP = "snap-0123456789abcdef0"
SOON = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def world(server, ec2, tmp_path_factory):
    """An AMI, a snapshot no image uses, and an S3 disk to import."""
    tmp = tmp_path_factory.mktemp("dry-run")
    ami = new_ami(server, ec2, tmp)
    spare = new_ami(server, ec2, tmp)
    ec2.deregister_image(ImageId=spare["ImageId"])
    bucket = "dry-run-" + uuid.uuid4().hex[:8]
    server.put_object(bucket, "disk.raw", b"\0" * 1024 * 1024)
    return {"ami": ami["ImageId"], "snap": ami["SnapshotId"], "free_snap": spare["SnapshotId"],
            "bucket": bucket}


def _disk(w, fmt="RAW"):
    return {"Format": fmt, "UserBucket": {"S3Bucket": w["bucket"], "S3Key": "disk.raw"}}


# action: (arguments of a call that would succeed, [(wrong arguments, EC2's error code)])
CASES = {
    "describe_images": (lambda w: {"ImageIds": [w["ami"]]},
                        [(lambda w: {"ImageIds": ["ami-zz"]}, "InvalidAMIID.Malformed"),
                         (lambda w: {"ImageIds": [MISSING_AMI]}, "InvalidAMIID.NotFound")]),
    "describe_snapshots": (lambda w: {"SnapshotIds": [w["snap"]]},
                           [(lambda w: {"SnapshotIds": [MISSING_SNAP]},
                             "InvalidSnapshot.NotFound")]),
    "describe_import_image_tasks": (lambda w: {}, [(lambda w: {"ImportTaskIds": [
        "import-ami-0123456789abcdef0"]}, "InvalidConversionTaskId")]),
    "describe_tags": (lambda w: {}, []),
    "describe_regions": (lambda w: {}, []),
    "describe_image_attribute": (
        lambda w: {"ImageId": w["ami"], "Attribute": "description"},
        [(lambda w: {"ImageId": w["ami"], "Attribute": "nonsense"}, "InvalidParameterValue"),
         (lambda w: {"ImageId": MISSING_AMI, "Attribute": "description"},
          "InvalidAMIID.NotFound")]),
    "import_image": (lambda w: {"DiskContainers": [_disk(w)]},
                     [(lambda w: {"DiskContainers": [_disk(w, "foo")]}, "InvalidParameterValue"),
                      (lambda w: {"DiskContainers": [_disk(w)], "RoleName": "no-such-role"},
                       "InvalidParameter")]),
    "import_snapshot": (lambda w: {"DiskContainer": _disk(w)},
                        [(lambda w: {"DiskContainer": _disk(w, "foo")},
                          "InvalidParameterValue")]),
    "export_image": (lambda w: {"ImageId": w["ami"], "DiskImageFormat": "RAW",
                                "S3ExportLocation": {"S3Bucket": w["bucket"]}},
                     [(lambda w: {"ImageId": MISSING_AMI, "DiskImageFormat": "RAW",
                                  "S3ExportLocation": {"S3Bucket": w["bucket"]}},
                       "InvalidAMIID.NotFound")]),
    "copy_image": (lambda w: {"Name": "dry-" + uuid.uuid4().hex[:6], "SourceImageId": w["ami"],
                              "SourceRegion": "us-east-1"},
                   [(lambda w: {"Name": "dry", "SourceImageId": MISSING_AMI,
                                "SourceRegion": "us-east-1"}, "InvalidAMIID.NotFound")]),
    "register_image": (lambda w: {"Name": "dry-" + uuid.uuid4().hex[:6],
                                  "RootDeviceName": "/dev/xvda",
                                  "BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                                                           "Ebs": {"SnapshotId": w["snap"]}}]},
                       [(lambda w: {"Name": "dry", "RootDeviceName": "/dev/xvda",
                                    "BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                                                             "Ebs": {"SnapshotId": MISSING_SNAP}}]},
                         "InvalidSnapshot.NotFound")]),
    "deregister_image": (lambda w: {"ImageId": w["ami"]},
                         [(lambda w: {"ImageId": MISSING_AMI}, "InvalidAMIID.NotFound")]),
    "delete_snapshot": (lambda w: {"SnapshotId": w["free_snap"]},
                        [(lambda w: {"SnapshotId": w["snap"]}, "InvalidSnapshot.InUse")]),
    "create_tags": (lambda w: {"Resources": [w["ami"]], "Tags": [{"Key": "k", "Value": "v"}]},
                    [(lambda w: {"Resources": [MISSING_AMI], "Tags": [{"Key": "k"}]},
                      "InvalidAMIID.NotFound")]),
    "delete_tags": (lambda w: {"Resources": [w["ami"]]},
                    [(lambda w: {"Resources": ["ami-zz"]}, "InvalidID")]),
    "modify_image_attribute": (lambda w: {"ImageId": w["ami"], "Description": {"Value": "x"}},
                               [(lambda w: {"ImageId": MISSING_AMI,
                                            "Description": {"Value": "x"}},
                                 "InvalidAMIID.NotFound")]),
    "reset_image_attribute": (lambda w: {"ImageId": w["ami"], "Attribute": "launchPermission"},
                              [(lambda w: {"ImageId": MISSING_AMI,
                                           "Attribute": "launchPermission"},
                                "InvalidAMIID.NotFound")]),
    "modify_snapshot_attribute": (
        lambda w: {"SnapshotId": w["snap"], "Attribute": "createVolumePermission",
                   "OperationType": "add", "UserIds": ["111111111111"]},
        [(lambda w: {"SnapshotId": MISSING_SNAP, "Attribute": "createVolumePermission",
                     "OperationType": "add", "UserIds": ["111111111111"]},
          "InvalidSnapshot.NotFound")]),
    "reset_snapshot_attribute": (
        lambda w: {"SnapshotId": w["snap"], "Attribute": "createVolumePermission"},
        [(lambda w: {"SnapshotId": MISSING_SNAP, "Attribute": "createVolumePermission"},
          "InvalidSnapshot.NotFound")]),
    "enable_image_deregistration_protection": (
        lambda w: {"ImageId": w["ami"]},
        [(lambda w: {"ImageId": MISSING_AMI}, "InvalidAMIID.NotFound")]),
    "disable_image_deregistration_protection": (
        lambda w: {"ImageId": w["ami"]},
        [(lambda w: {"ImageId": MISSING_AMI}, "InvalidAMIID.NotFound")]),
    "enable_image_deprecation": (
        lambda w: {"ImageId": w["ami"], "DeprecateAt": SOON},
        [(lambda w: {"ImageId": MISSING_AMI, "DeprecateAt": SOON},
          "InvalidAMIID.NotFound")]),
    "disable_image_deprecation": (lambda w: {"ImageId": w["ami"]},
                                  [(lambda w: {"ImageId": MISSING_AMI},
                                    "InvalidAMIID.NotFound")]),
    "cancel_import_task": (None, [(lambda w: {"ImportTaskId": "import-ami-0123456789abcdef0"},
                                   "InvalidConversionTaskId")]),
}


def test_every_served_action_with_dry_run_is_covered():
    import botocore.session
    from botocore import xform_name

    from vmimport.api.actions import EC2_ACTIONS
    model = botocore.session.get_session().get_service_model("ec2")
    accepting = {xform_name(name) for name in EC2_ACTIONS
                 if "DryRun" in model.operation_model(name).input_shape.members}
    assert accepting - {"describe_account_attributes", "describe_availability_zones",
                        "describe_conversion_tasks", "describe_export_image_tasks",
                        "describe_import_snapshot_tasks", "describe_snapshot_attribute"} \
        <= set(CASES)


def _state(ec2, w) -> dict:
    """What a DryRun must leave as it found it."""
    image = ec2.describe_images(ImageIds=[w["ami"]])["Images"][0]
    return {
        "image": image,
        "snapshots": sorted(s["SnapshotId"] for s in ec2.describe_snapshots(
            OwnerIds=["self"])["Snapshots"]),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
        "imports": len(ec2.describe_import_image_tasks()["ImportImageTasks"])
        + len(ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]),
        "exports": len(ec2.describe_export_image_tasks()["ExportImageTasks"]),
        "attribute": ec2.describe_snapshot_attribute(
            SnapshotId=w["snap"], Attribute="createVolumePermission")["CreateVolumePermissions"],
    }


@pytest.mark.parametrize("action", sorted(CASES))
def test_dry_run_checks_then_changes_nothing(server, ec2, world, action):
    good, wrong = CASES[action]
    call = getattr(ec2, action)
    before = _state(ec2, world)
    for arguments, code in wrong:
        error = error_of(call, DryRun=True, **arguments(world))
        assert error["Code"] == code, (arguments(world), error)
    if good is not None:
        error = error_of(call, DryRun=True, **good(world))
        assert error == {"Code": "DryRunOperation",
                         "Message": "Request would have succeeded, but DryRun flag is set."}
    assert _state(ec2, world) == before


@pytest.mark.parametrize("action", sorted(a for a, (good, _) in CASES.items() if good))
def test_dry_run_answers_unauthorized_when_the_key_may_not(server, world, action):
    """The READONLY key may call Describe* only."""
    readonly = server.client("ec2", access_key="READONLY", secret_key="readonlysecret")
    good, _ = CASES[action]
    expected = "DryRunOperation" if action.startswith("describe_") else "UnauthorizedOperation"
    assert error_code(getattr(readonly, action), DryRun=True, **good(world)) == expected


def test_without_dry_run_the_same_call_takes_effect(ec2, world):
    """The control: what DryRun refused to do, the real call does."""
    ec2.create_tags(Resources=[world["ami"]], Tags=[{"Key": "dry", "Value": "no"}])
    tags = ec2.describe_images(ImageIds=[world["ami"]])["Images"][0]["Tags"]
    assert {"Key": "dry", "Value": "no"} in tags
    ec2.delete_tags(Resources=[world["ami"]], Tags=[{"Key": "dry"}])
