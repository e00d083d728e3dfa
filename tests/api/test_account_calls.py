"""What tools call first (DescribeRegions, DescribeAvailabilityZones,
DescribeAccountAttributes, DescribeConversionTasks) and EC2's fidelity details: malformed ids,
documented DescribeImages filters, FullSnapshotSizeInBytes, the origin of copies."""

from __future__ import annotations

import uuid

import pytest

from .ami_fixtures import BLOCK, DATA_BLOCKS, DISK_BYTES, error_code, error_of, new_ami


def test_describe_regions_answers_for_the_server_region(server, ec2):
    assert ec2.describe_regions()["Regions"] == [
        {"RegionName": "us-east-1", "OptInStatus": "opt-in-not-required",
         "Endpoint": f"127.0.0.1:{server.port}"}]
    assert ec2.describe_regions(AllRegions=True, RegionNames=["us-east-1"])["Regions"]
    assert ec2.describe_regions(Filters=[{"Name": "region-name",
                                          "Values": ["eu-*"]}])["Regions"] == []
    assert error_code(ec2.describe_regions, RegionNames=["eu-west-3"]) == "InvalidParameterValue"
    assert server.aws("ec2", "describe-regions", "--query", "Regions[].RegionName") == [
        "us-east-1"]


def test_describe_availability_zones(server, ec2):
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["ZoneId"], z["State"], z["RegionName"]) for z in zones] == [
        ("us-east-1a", "use1-az1", "available", "us-east-1")]
    assert ec2.describe_availability_zones(ZoneIds=["use1-az1"])["AvailabilityZones"] == zones
    assert ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": [
        "impaired"]}])["AvailabilityZones"] == []
    assert error_code(ec2.describe_availability_zones,
                      ZoneNames=["us-east-1f"]) == "InvalidParameterValue"
    assert error_code(ec2.describe_availability_zones,
                      Filters=[{"Name": "no-such-filter", "Values": ["x"]}]) \
        == "InvalidParameterValue"


def test_describe_account_attributes(ec2):
    attributes = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
                  for a in ec2.describe_account_attributes()["AccountAttributes"]}
    assert attributes["supported-platforms"] == ["VPC"]
    assert attributes["default-vpc"] == ["none"]
    only = ec2.describe_account_attributes(AttributeNames=["default-vpc"])["AccountAttributes"]
    assert [a["AttributeName"] for a in only] == ["default-vpc"]
    assert error_code(ec2.describe_account_attributes,
                      AttributeNames=["no-such"]) == "InvalidParameterValue"


def test_describe_conversion_tasks(server, ec2):
    assert ec2.describe_conversion_tasks()["ConversionTasks"] == []
    assert error_code(ec2.describe_conversion_tasks,
                      ConversionTaskIds=["import-i-ffvko9js"]) == "InvalidConversionTaskId"
    assert server.aws("ec2", "describe-conversion-tasks") == {"ConversionTasks": []}


@pytest.mark.parametrize("call,kwargs,code", [
    ("describe_images", {"ImageIds": ["ami-zz"]}, "InvalidAMIID.Malformed"),
    ("describe_images", {"ImageIds": ["ami-0123456789abcdef"]}, "InvalidAMIID.Malformed"),
    ("deregister_image", {"ImageId": "ami-12345678x"}, "InvalidAMIID.Malformed"),
    ("describe_image_attribute", {"ImageId": "snap-0123456789abcdef0",
                                  "Attribute": "description"}, "InvalidAMIID.Malformed"),
    ("describe_snapshots", {"SnapshotIds": ["snap-zz"]}, "InvalidSnapshotID.Malformed"),
    ("delete_snapshot", {"SnapshotId": "ami-0123456789abcdef0"}, "InvalidSnapshotID.Malformed"),
    # Well formed but unknown: NotFound, as before.
    ("describe_images", {"ImageIds": ["ami-0123456789abcdef0"]}, "InvalidAMIID.NotFound"),
    ("describe_images", {"ImageIds": ["ami-12345678"]}, "InvalidAMIID.NotFound"),
    ("describe_snapshots", {"SnapshotIds": ["snap-0123456789abcdef0"]},
     "InvalidSnapshot.NotFound"),
])
def test_ids_are_checked_for_ec2_syntax(ec2, call, kwargs, code):
    assert error_code(getattr(ec2, call), **kwargs) == code


def test_documented_filters_sizes_and_copy_origin(server, ec2, tmp_path):
    ami = new_ami(server, ec2, tmp_path)
    image_id = ami["ImageId"]
    for name, value in (("platform-details", "Linux/UNIX"), ("usage-operation", "RunInstances"),
                        ("sriov-net-support", "simple"), ("is-public", "false"),
                        ("image-id", image_id)):
        found = ec2.describe_images(Filters=[{"Name": name, "Values": [value]}])["Images"]
        assert image_id in [i["ImageId"] for i in found], name
    assert ec2.describe_images(ImageIds=[image_id], Filters=[
        {"Name": "kernel-id", "Values": ["*"]}])["Images"] == []

    snapshot = ec2.describe_snapshots(SnapshotIds=[ami["SnapshotId"]])["Snapshots"][0]
    assert snapshot["FullSnapshotSizeInBytes"] == len(DATA_BLOCKS) * BLOCK < DISK_BYTES

    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["DeregistrationProtection"] == "disabled"
    assert "SourceImageId" not in image
    copy_id = ec2.copy_image(Name=f"copy-{uuid.uuid4().hex[:6]}", SourceImageId=image_id,
                             SourceRegion="us-east-1")["ImageId"]
    copy = ec2.describe_images(ImageIds=[copy_id])["Images"][0]
    assert (copy["SourceImageId"], copy["SourceImageRegion"]) == (image_id, "us-east-1")
    assert [i["ImageId"] for i in ec2.describe_images(Filters=[
        {"Name": "source-image-id", "Values": [image_id]}])["Images"]] == [copy_id]
    error = error_of(ec2.copy_image, Name="x-copy", SourceImageId="ami-nothex",
                     SourceRegion="us-east-1")
    assert error["Code"] == "InvalidAMIID.Malformed" and "ami-nothex" in error["Message"]
