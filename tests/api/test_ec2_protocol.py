"""Round trips through botocore itself: its EC2Serializer produces the requests we parse, and its
EC2QueryParser reads the responses we write. No HTTP involved."""

import random
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import botocore.parsers
import botocore.serialize
import pytest

from vmimport.api.ec2_protocol import ec2_model, parse_query, serialize_error, serialize_response
from vmimport.service.errors import ApiError

UTC = timezone.utc
_serializer = botocore.serialize.create_serializer("ec2", include_validation=False)


def op(name):
    return ec2_model().operation_model(name)


def wire(name, params):
    """What boto3 puts on the wire for ``params``, decoded as the HTTP layer would."""
    body = _serializer.serialize_to_request(params, op(name))["body"]
    pairs = urllib.parse.parse_qsl(urllib.parse.urlencode(body), keep_blank_values=True)
    return [(k, v) for k, v in pairs if k not in ("Action", "Version")]


def roundtrip(name, params):
    assert parse_query(op(name), wire(name, params)) == params


def parse(name, query):
    return parse_query(op(name), urllib.parse.parse_qsl(query, keep_blank_values=True))


def botocore_parse(name, body, status=200):
    parser = botocore.parsers.create_parser("ec2")
    return parser.parse({"status_code": status, "headers": {}, "body": body}, op(name).output_shape)


def response_roundtrip(name, result):
    parsed = botocore_parse(name, serialize_response(op(name), result, "req-1"))
    assert parsed.pop("ResponseMetadata")["RequestId"] == "req-1"
    assert parsed == result
    return parsed


# --------------------------------------------------------------------------------- requests

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TAGS = [{"ResourceType": "import-image-task", "Tags": [{"Key": "a", "Value": "b"}, {"Key": "c&=d", "Value": ""}]}]


def test_import_image_every_member():
    params = {
        "Architecture": "x86_64",
        "ClientData": {"Comment": "c", "UploadStart": T0, "UploadEnd": datetime(2024, 1, 2, 3, 4, 5, 123456, UTC),
                       "UploadSize": 1.5},
        "ClientToken": "tok",
        "Description": "d é ü & = + %",
        "DiskContainers": [
            {"Description": "disk1", "DeviceName": "/dev/sda1", "Format": "vmdk",
             "UserBucket": {"S3Bucket": "b", "S3Key": "k.vmdk"}},
            {"Format": "raw", "Url": "s3://b/k2?x=1&y=2"},
            {"SnapshotId": "snap-1"},
        ],
        "DryRun": False,
        "Encrypted": True,
        "Hypervisor": "xen",
        "KmsKeyId": "alias/x",
        "LicenseType": "BYOL",
        "Platform": "Linux",
        "RoleName": "vmimport",
        "LicenseSpecifications": [{"LicenseConfigurationArn": "arn:lc1"}, {"LicenseConfigurationArn": "arn:lc2"}],
        "TagSpecifications": TAGS,
        "UsageOperation": "RunInstances:0010",
        "BootMode": "uefi",
    }
    assert set(params) == set(op("ImportImage").input_shape.members)
    roundtrip("ImportImage", params)


@pytest.mark.parametrize("name,params", [
    ("DescribeImportImageTasks", {"ImportTaskIds": ["import-ami-1", "import-ami-2"], "MaxResults": 5, "NextToken": "n",
                                  "Filters": [{"Name": "task-state", "Values": ["active", "completed"]}], "DryRun": True}),
    ("DescribeImportSnapshotTasks", {"ImportTaskIds": ["import-snap-1"], "Filters": [{"Name": "x", "Values": ["y"]}]}),
    ("DescribeImages", {"ImageIds": ["ami-1", "ami-2"], "Owners": ["self"], "ExecutableUsers": ["all"],
                        "Filters": [{"Name": "name", "Values": ["a*"]}, {"Name": "state", "Values": ["available"]}],
                        "IncludeDeprecated": True, "IncludeDisabled": False, "MaxResults": 6, "NextToken": "x",
                        "DryRun": False}),
    ("DescribeSnapshots", {"SnapshotIds": ["snap-1"], "OwnerIds": ["self", "123"], "RestorableByUserIds": ["123"],
                           "Filters": [{"Name": "status", "Values": ["completed"]}], "MaxResults": 6, "NextToken": ""}),
    ("DescribeTags", {"Filters": [{"Name": "resource-type", "Values": ["import-image-task"]}], "MaxResults": 5}),
    ("DescribeExportImageTasks", {"ExportImageTaskIds": ["export-ami-1"], "MaxResults": 5,
                                  "Filters": [{"Name": "x", "Values": ["y"]}]}),
    ("CreateTags", {"Resources": ["ami-1", "import-ami-1"], "Tags": [{"Key": "a", "Value": "b"}, {"Key": "c"}],
                    "DryRun": False}),
    ("DeleteTags", {"Resources": ["ami-1"], "Tags": [{"Key": "a"}]}),
    ("DeleteSnapshot", {"SnapshotId": "snap-1", "DryRun": True}),
    ("DeregisterImage", {"ImageId": "ami-1", "DeleteAssociatedSnapshots": True, "DryRun": True}),
    ("CancelImportTask", {"ImportTaskId": "import-ami-1", "CancelReason": "r", "DryRun": False}),
    ("RegisterImage", {"Name": "nnn", "RootDeviceName": "/dev/xvda", "Architecture": "x86_64",
                       "VirtualizationType": "hvm", "EnaSupport": True, "BootMode": "uefi", "TpmSupport": "v2.0",
                       "BlockDeviceMappings": [
                           {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1", "VolumeType": "gp3",
                                                               "DeleteOnTermination": True, "VolumeSize": 8,
                                                               "Iops": 3000, "Encrypted": False}},
                           {"DeviceName": "/dev/xvdb", "NoDevice": ""}],
                       "TagSpecifications": [{"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}]}),
    ("ImportSnapshot", {"ClientToken": "t", "Description": "d", "Encrypted": False, "RoleName": "vmimport",
                        "DiskContainer": {"Description": "dd", "Format": "VHD",
                                          "UserBucket": {"S3Bucket": "b", "S3Key": "k"}},
                        "ClientData": {"UploadStart": T0, "UploadSize": 0.0},
                        "TagSpecifications": [{"ResourceType": "import-snapshot-task", "Tags": [{"Key": "a"}]}]}),
    ("ExportImage", {"ClientToken": "c", "DiskImageFormat": "VMDK", "ImageId": "ami-1", "RoleName": "vmimport",
                     "S3ExportLocation": {"S3Bucket": "b", "S3Prefix": "p/"}, "Description": "d",
                     "TagSpecifications": [{"ResourceType": "export-image-task", "Tags": [{"Key": "a"}]}]}),
])
def test_request_roundtrip(name, params):
    roundtrip(name, params)


def test_wire_keys_are_the_documented_ones():
    keys = dict(wire("DescribeImportImageTasks", {"Filters": [{"Name": "n", "Values": ["v"]}], "ImportTaskIds": ["i"]}))
    assert keys == {"Filters.1.Name": "n", "Filters.1.Value.1": "v", "ImportTaskId.1": "i"}
    assert "Filter.1.Name" in dict(wire("DescribeImages", {"Filters": [{"Name": "n"}]}))


# The captured examples of reference §1.1, verbatim (percent-encoded where the wire is).
CAPTURED = {
    "ImportImage": (
        "Architecture=x86_64&ClientToken=tok&Description=d&DiskContainer.1.Description=disk1"
        "&DiskContainer.1.DeviceName=/dev/sda1&DiskContainer.1.Format=vmdk&DiskContainer.1.UserBucket.S3Bucket=b"
        "&DiskContainer.1.UserBucket.S3Key=k.vmdk&DiskContainer.2.Format=raw&DiskContainer.2.Url=s3%3A%2F%2Fb%2Fk2"
        "&DryRun=false&Encrypted=true&KmsKeyId=alias/x&LicenseType=BYOL&Platform=Linux&RoleName=vmimport&Hypervisor=xen"
        "&LicenseSpecifications.1.LicenseConfigurationArn=arn:lc&TagSpecification.1.ResourceType=import-image-task"
        "&TagSpecification.1.Tag.1.Key=a&TagSpecification.1.Tag.1.Value=b&UsageOperation=RunInstances:0010&BootMode=uefi"
        "&ClientData.Comment=c&ClientData.UploadStart=2024-01-01T00:00:00Z&ClientData.UploadEnd=2024-01-02T00:00:00Z"
        "&ClientData.UploadSize=1.5",
        {"Architecture": "x86_64", "ClientToken": "tok", "Description": "d",
         "DiskContainers": [{"Description": "disk1", "DeviceName": "/dev/sda1", "Format": "vmdk",
                             "UserBucket": {"S3Bucket": "b", "S3Key": "k.vmdk"}},
                            {"Format": "raw", "Url": "s3://b/k2"}],
         "DryRun": False, "Encrypted": True, "KmsKeyId": "alias/x", "LicenseType": "BYOL", "Platform": "Linux",
         "RoleName": "vmimport", "Hypervisor": "xen", "LicenseSpecifications": [{"LicenseConfigurationArn": "arn:lc"}],
         "TagSpecifications": [{"ResourceType": "import-image-task", "Tags": [{"Key": "a", "Value": "b"}]}],
         "UsageOperation": "RunInstances:0010", "BootMode": "uefi",
         "ClientData": {"Comment": "c", "UploadStart": T0, "UploadEnd": datetime(2024, 1, 2, tzinfo=UTC),
                        "UploadSize": 1.5}}),
    "DescribeImportImageTasks": (
        "ImportTaskId.1=import-ami-1&ImportTaskId.2=import-ami-2&Filters.1.Name=task-state&Filters.1.Value.1=active"
        "&Filters.1.Value.2=completed&MaxResults=5&NextToken=n&DryRun=true",
        {"ImportTaskIds": ["import-ami-1", "import-ami-2"], "MaxResults": 5, "NextToken": "n", "DryRun": True,
         "Filters": [{"Name": "task-state", "Values": ["active", "completed"]}]}),
    "DescribeImportSnapshotTasks": (
        "ImportTaskId.1=import-snap-1&Filters.1.Name=task-state&Filters.1.Value.1=active&MaxResults=5&NextToken=n",
        {"ImportTaskIds": ["import-snap-1"], "Filters": [{"Name": "task-state", "Values": ["active"]}],
         "MaxResults": 5, "NextToken": "n"}),
    "CancelImportTask": ("ImportTaskId=import-ami-1&CancelReason=r&DryRun=false",
                         {"ImportTaskId": "import-ami-1", "CancelReason": "r", "DryRun": False}),
    "ImportSnapshot": (
        "ClientToken=t&Description=d&DiskContainer.Description=dd&DiskContainer.Format=VHD"
        "&DiskContainer.UserBucket.S3Bucket=b&DiskContainer.UserBucket.S3Key=k&Encrypted=false&RoleName=vmimport"
        "&TagSpecification.1.ResourceType=import-snapshot-task&TagSpecification.1.Tag.1.Key=a"
        "&TagSpecification.1.Tag.1.Value=b",
        {"ClientToken": "t", "Description": "d", "Encrypted": False, "RoleName": "vmimport",
         "DiskContainer": {"Description": "dd", "Format": "VHD", "UserBucket": {"S3Bucket": "b", "S3Key": "k"}},
         "TagSpecifications": [{"ResourceType": "import-snapshot-task", "Tags": [{"Key": "a", "Value": "b"}]}]}),
    "ExportImage": (
        "DiskImageFormat=VMDK&ImageId=ami-1&S3ExportLocation.S3Bucket=b&S3ExportLocation.S3Prefix=p/"
        "&TagSpecification.1.ResourceType=export-image-task&ClientToken=5c2b4d3e-0000-4000-8000-000000000000",
        {"DiskImageFormat": "VMDK", "ImageId": "ami-1", "S3ExportLocation": {"S3Bucket": "b", "S3Prefix": "p/"},
         "TagSpecifications": [{"ResourceType": "export-image-task"}],
         "ClientToken": "5c2b4d3e-0000-4000-8000-000000000000"}),
    "DescribeExportImageTasks": (
        "ExportImageTaskId.1=export-ami-1&Filter.1.Name=x&Filter.1.Value.1=y&MaxResults=5",
        {"ExportImageTaskIds": ["export-ami-1"], "Filters": [{"Name": "x", "Values": ["y"]}], "MaxResults": 5}),
    "DescribeImages": (
        "ImageId.1=ami-1&Owner.1=self&ExecutableBy.1=all&Filter.1.Name=name&Filter.1.Value.1=a"
        "&IncludeDeprecated=true&IncludeDisabled=true&MaxResults=6&NextToken=x&DryRun=false",
        {"ImageIds": ["ami-1"], "Owners": ["self"], "ExecutableUsers": ["all"],
         "Filters": [{"Name": "name", "Values": ["a"]}], "IncludeDeprecated": True, "IncludeDisabled": True,
         "MaxResults": 6, "NextToken": "x", "DryRun": False}),
    "DescribeSnapshots": (
        "SnapshotId.1=snap-1&Owner.1=self&RestorableBy.1=123&Filter.1.Name=status&Filter.1.Value.1=completed"
        "&MaxResults=6",
        {"SnapshotIds": ["snap-1"], "OwnerIds": ["self"], "RestorableByUserIds": ["123"],
         "Filters": [{"Name": "status", "Values": ["completed"]}], "MaxResults": 6}),
    "DeregisterImage": ("ImageId=ami-1&DeleteAssociatedSnapshots=true&DryRun=true",
                        {"ImageId": "ami-1", "DeleteAssociatedSnapshots": True, "DryRun": True}),
    "DeleteSnapshot": ("SnapshotId=snap-1&DryRun=true", {"SnapshotId": "snap-1", "DryRun": True}),
    "CreateTags": ("ResourceId.1=ami-1&ResourceId.2=import-ami-1&Tag.1.Key=a&Tag.1.Value=b&DryRun=false",
                   {"Resources": ["ami-1", "import-ami-1"], "Tags": [{"Key": "a", "Value": "b"}], "DryRun": False}),
    "DeleteTags": ("ResourceId.1=ami-1&Tag.1.Key=a", {"Resources": ["ami-1"], "Tags": [{"Key": "a"}]}),
    "DescribeTags": ("Filter.1.Name=resource-type&Filter.1.Value.1=import-image-task&MaxResults=5&NextToken=t",
                     {"Filters": [{"Name": "resource-type", "Values": ["import-image-task"]}], "MaxResults": 5,
                      "NextToken": "t"}),
    "RegisterImage": (
        "Name=nnn&RootDeviceName=/dev/xvda&BlockDeviceMapping.1.DeviceName=/dev/xvda"
        "&BlockDeviceMapping.1.Ebs.SnapshotId=snap-1&BlockDeviceMapping.1.Ebs.VolumeType=gp3"
        "&BlockDeviceMapping.1.Ebs.DeleteOnTermination=true&Architecture=x86_64&VirtualizationType=hvm"
        "&EnaSupport=true&BootMode=uefi&TagSpecification.1.ResourceType=image",
        {"Name": "nnn", "RootDeviceName": "/dev/xvda", "Architecture": "x86_64", "VirtualizationType": "hvm",
         "EnaSupport": True, "BootMode": "uefi", "TagSpecifications": [{"ResourceType": "image"}],
         "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1", "VolumeType": "gp3",
                                                                     "DeleteOnTermination": True}}]}),
}


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_examples(name):
    query, expected = CAPTURED[name]
    assert parse(name, query) == expected
    roundtrip(name, expected)  # and botocore agrees with the captured wire form


def test_other_sdk_spellings_and_lenient_forms():
    # Filter.N where the model says Filters.N, and the reverse; ImportTaskIds.N; Values.N.
    assert parse("DescribeImportImageTasks", "Filter.1.Name=a&Filter.1.Values.1=b&ImportTaskIds.1=i") == \
        {"Filters": [{"Name": "a", "Values": ["b"]}], "ImportTaskIds": ["i"]}
    assert parse("DescribeImages", "Filters.1.Name=a&ImageIds.1=x&Owners.1=self") == \
        {"Filters": [{"Name": "a"}], "ImageIds": ["x"], "Owners": ["self"]}
    assert parse("ImportImage", "DiskContainers.1.Format=vmdk&TagSpecifications.1.Tags.1.Key=k&LicenseSpecification.1."
                 "LicenseConfigurationArn=a") == {"DiskContainers": [{"Format": "vmdk"}],
                                                  "TagSpecifications": [{"Tags": [{"Key": "k"}]}],
                                                  "LicenseSpecifications": [{"LicenseConfigurationArn": "a"}]}
    # Indices are ordered numerically, gaps allowed; empty string values are kept; bools any case.
    assert parse("DescribeImages", "ImageId.10=c&ImageId.2=b&ImageId.1=a&NextToken=&DryRun=TRUE") == \
        {"ImageIds": ["a", "b", "c"], "NextToken": "", "DryRun": True}
    # The Query protocol's empty-list spelling.
    assert parse("DescribeImages", "ImageId=") == {"ImageIds": []}
    # Timestamps: fractional seconds, offsets, naive (UTC) and epoch seconds.
    for text, expected in [("2024-01-01T00:00:00.250Z", T0 + timedelta(milliseconds=250)),
                           ("2024-01-01T01:00:00+01:00", T0), ("2024-01-01T00:00:00", T0),
                           ("1704067200", T0), ("1704067200.5", T0 + timedelta(milliseconds=500))]:
        assert parse("ImportImage", "ClientData.UploadStart=" + urllib.parse.quote(text)) == \
            {"ClientData": {"UploadStart": expected}}


def test_no_input_operation():
    assert parse_query(op("DescribeAccountAttributes"), []) == {}


@pytest.mark.parametrize("name,query,code,fragment", [
    ("DescribeImages", "MaxResults=abc", "InvalidParameterValue", "Invalid value 'abc' for MaxResults: not an integer"),
    ("DescribeImages", "MaxResults=1.5", "InvalidParameterValue", "not an integer"),
    ("DescribeImages", "MaxResults=", "InvalidParameterValue", "not an integer"),
    ("DescribeImages", "DryRun=yes", "InvalidParameterValue", "Invalid value 'yes' for DryRun"),
    ("ImportImage", "ClientData.UploadSize=big", "InvalidParameterValue", "ClientData.UploadSize"),
    ("ImportImage", "ClientData.UploadStart=yesterday", "InvalidParameterValue", "ClientData.UploadStart"),
    ("ImportImage", "BootMode=bios", "InvalidParameterValue", "legacy-bios, uefi, uefi-preferred"),
    ("ImportImage", "TagSpecification.1.ResourceType=nope", "InvalidParameterValue", "TagSpecification.1.ResourceType"),
    ("ExportImage", "DiskImageFormat=qcow2&ImageId=a&S3ExportLocation.S3Bucket=b", "InvalidParameterValue", "VMDK"),
    ("RegisterImage", "Name=ab", "InvalidParameterValue", "length must be at least 3"),
    ("RegisterImage", "Name=" + "n" * 129, "InvalidParameterValue", "length must be at most 128"),
    ("DescribeExportImageTasks", "MaxResults=501", "InvalidParameterValue", "value must be at most 500"),
    ("DescribeExportImageTasks", "MaxResults=0", "InvalidParameterValue", "value must be at least 1"),
    ("DescribeImages", "Foo=1", "UnknownParameter", "The parameter Foo is not recognized"),
    ("DescribeImages", "imageId.1=x", "UnknownParameter", "imageId.1"),
    ("DescribeImages", "Filter.1.Nme=x", "UnknownParameter", "The parameter Filter.1.Nme is not recognized"),
    ("DescribeImages", "DryRun.1=true", "UnknownParameter", "DryRun.1"),
    ("DescribeImages", "Filter.1.Name.x=a", "UnknownParameter", "Filter.1.Name.x"),
    ("DeregisterImage", "DryRun=true", "MissingParameter", "The request must contain the parameter ImageId"),
    ("ExportImage", "DiskImageFormat=RAW&ImageId=a&S3ExportLocation.S3Prefix=p", "MissingParameter",
     "S3ExportLocation.S3Bucket"),
    ("CreateTags", "ResourceId.1=ami-1", "MissingParameter", "parameter Tag"),
    ("DescribeImages", "ImageId.0=x", "InvalidParameter", "'0'"),
    ("DescribeImages", "ImageId.x=a", "InvalidParameter", "'x'"),
    ("DescribeImages", "ImageId.-1=a", "InvalidParameter", "'-1'"),
    ("DescribeImages", "ImageId.=a", "InvalidParameter", "ImageId."),
    ("DescribeImages", "ImageId.%C2%B2=a", "InvalidParameter", "'\u00b2'"),
    ("CreateInstanceConnectEndpoint", "SubnetId=s&" + "&".join(f"SecurityGroupId.{i}=sg" for i in range(1, 18)),
     "InvalidParameterValue", "SecurityGroupId takes 0 to 16 items, got 17"),
    ("DescribeImages", "ImageId.1234567890=a", "InvalidParameter", "1234567890"),
    ("DescribeImages", "ImageId=ami-1", "InvalidParameter", "ImageId.1"),
    ("ImportImage", "DiskContainer.1=x", "InvalidParameter", "DiskContainer.1 is a structure"),
    ("ImportSnapshot", "DiskContainer=x", "InvalidParameter", "DiskContainer is a structure"),
    ("DescribeImages", "ImageId.1=a&ImageId.1=b", "InvalidParameter", "more than once"),
    ("DescribeImages", "Filter.1.Name=a&Filters.1.Name=b", "InvalidParameter", "more than once"),
])
def test_refusals(name, query, code, fragment):
    with pytest.raises(ApiError) as info:
        parse(name, query)
    assert info.value.code == code
    assert fragment in info.value.message


def test_unknown_parameter_on_operation_without_input():
    with pytest.raises(ApiError, match="UnknownParameter"):
        parse_query(op("DescribeAccountAttributes"), [("Foo", "x")])


# --------------------------------------------------------------------------------- responses

SNAP = {"Description": "disk", "DeviceName": "/dev/sda1", "DiskImageSize": 705638400.0, "Format": "VMDK",
        "Progress": "28", "SnapshotId": "snap-1", "Status": "active", "StatusMessage": "converting",
        "UserBucket": {"S3Bucket": "b", "S3Key": "k <&> \"q\" 'a'"}}


def test_import_image_response():
    response_roundtrip("ImportImage", {
        "Architecture": "x86_64", "Description": "d", "Encrypted": False, "ImportTaskId": "import-ami-0123",
        "Progress": "1", "SnapshotDetails": [SNAP, {"DiskImageSize": 0.0, "Format": "RAW", "Url": "https://x/y"}],
        "Status": "active", "StatusMessage": "pending", "LicenseSpecifications": [{"LicenseConfigurationArn": "a"}],
        "Tags": [{"Key": "k", "Value": "v"}], "UsageOperation": "RunInstances"})


def test_describe_import_image_tasks_response():
    result = response_roundtrip("DescribeImportImageTasks", {"ImportImageTasks": [
        {"ImportTaskId": "import-ami-1", "ImageId": "ami-1", "Status": "completed", "SnapshotDetails": [SNAP],
         "Tags": [], "LicenseSpecifications": [], "BootMode": "uefi", "Encrypted": True, "Platform": "Linux"},
        {"ImportTaskId": "import-ami-2", "Status": "deleted", "StatusMessage": "ClientError: bad disk",
         "Tags": [{"Key": "a", "Value": ""}]},
    ], "NextToken": "tok"})
    assert result["ImportImageTasks"][0]["Tags"] == []


def test_empty_list_is_an_empty_wrapper():
    body = serialize_response(op("DescribeImportImageTasks"), {"ImportImageTasks": []}, "r")
    assert b"<importImageTaskSet/>" in body
    assert botocore_parse("DescribeImportImageTasks", body)["ImportImageTasks"] == []


def test_describe_images_response():
    response_roundtrip("DescribeImages", {"Images": [{
        "ImageId": "ami-1", "Name": "n", "State": "available", "Public": False, "OwnerId": "123456789012",
        "CreationDate": "2024-01-01T00:00:00.000Z", "Architecture": "x86_64", "ImageType": "machine",
        "RootDeviceName": "/dev/xvda", "RootDeviceType": "ebs", "VirtualizationType": "hvm", "Hypervisor": "xen",
        "EnaSupport": True, "BootMode": "uefi", "Tags": [{"Key": "Name", "Value": "x"}],
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8, "VolumeType": "gp3",
                                                "DeleteOnTermination": True, "Encrypted": False, "Iops": 3000}},
            {"DeviceName": "/dev/xvdb", "VirtualName": "ephemeral0"}],
        "StateReason": {"Code": "c", "Message": "m"}, "ProductCodes": []}]})


def test_describe_snapshots_response():
    response_roundtrip("DescribeSnapshots", {"Snapshots": [{
        "SnapshotId": "snap-1", "VolumeId": "vol-ffffffff", "State": "completed", "StartTime": T0,
        "CompletionTime": datetime(2024, 1, 1, 0, 5, 0, 123000, UTC), "Progress": "100%",
        "OwnerId": "123456789012", "Description": "Created by vmimport", "VolumeSize": 8, "Encrypted": True,
        "KmsKeyId": "arn:aws:kms:x", "FullSnapshotSizeInBytes": 2 ** 40, "Tags": []}], "NextToken": ""})


def test_other_responses():
    response_roundtrip("DeregisterImage", {"Return": True, "DeleteSnapshotResults": [
        {"SnapshotId": "snap-1", "ReturnCode": "success"}, {"SnapshotId": "snap-2", "ReturnCode": "skipped"}]})
    response_roundtrip("CancelImportTask", {"ImportTaskId": "import-ami-1", "PreviousState": "active",
                                            "State": "deleting"})
    response_roundtrip("DescribeTags", {"Tags": [{"Key": "k", "ResourceId": "ami-1", "ResourceType": "image",
                                                  "Value": "v"}], "NextToken": "n"})
    response_roundtrip("ImportSnapshot", {"ImportTaskId": "import-snap-1", "Description": "d", "Tags": [],
                                          "SnapshotTaskDetail": {"DiskImageSize": 1.0, "Encrypted": False,
                                                                 "Status": "active", "UserBucket": {"S3Bucket": "b"}}})
    response_roundtrip("RegisterImage", {"ImageId": "ami-1"})


def test_response_details():
    body = serialize_response(op("ImportImage"), {"ImportTaskId": "i", "Description": None,
                                                  "SnapshotDetails": [{"DiskImageSize": 705638400}]}, "r-1")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ImportImageResponse '
                           b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId>')
    assert b"<diskImageSize>705638400.0</diskImageSize>" in body and b"description" not in body
    ts = serialize_response(op("DescribeSnapshots"), {"Snapshots": [
        {"StartTime": datetime(2024, 1, 1, 1, 0, 0, 999999, timezone(timedelta(hours=1)))}]}, "r")
    assert b"<startTime>2024-01-01T00:00:00.999Z</startTime>" in ts
    # Text that XML 1.0 cannot carry does not break the client's parser.
    weird = "a\r\nb\x00c\x1fd"
    parsed = botocore_parse("CancelImportTask",
                            serialize_response(op("CancelImportTask"), {"ImportTaskId": weird}, "r"))
    assert parsed["ImportTaskId"] == "a\r\nb\ufffdc\ufffdd"


@pytest.mark.parametrize("name", ["DeleteSnapshot", "CreateTags", "DeleteTags"])
def test_no_output_operations(name):
    body = serialize_response(op(name), {}, "r-2")
    assert body == (b'<?xml version="1.0" encoding="UTF-8"?>\n<' + name.encode() + b'Response xmlns="http://ec2.'
                    b'amazonaws.com/doc/2016-11-15/"><requestId>r-2</requestId><return>true</return></'
                    + name.encode() + b'Response>')
    assert botocore_parse(name, body)["ResponseMetadata"]["RequestId"] == "r-2"
    with pytest.raises(ValueError):
        serialize_response(op(name), {"Return": True}, "r")


@pytest.mark.parametrize("result,exc", [
    ({"ImportTaskID": "x"}, ValueError),  # typo in a handler
    ({"SnapshotDetails": [{"Size": 1.0}]}, ValueError),
    ({"Encrypted": "true"}, TypeError),
    ({"SnapshotDetails": [{"DiskImageSize": "1"}]}, TypeError),
    ({"SnapshotDetails": {"DiskImageSize": 1.0}}, TypeError),
    ({"Tags": "k=v"}, TypeError),
])
def test_response_programming_errors(result, exc):
    with pytest.raises(exc):
        serialize_response(op("ImportImage"), result, "r")


def test_error_envelope():
    body = serialize_error("InvalidParameterValue", "Value <x> & 'y' is bad", "req-9")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>')
    parsed = botocore_parse("ImportImage", body, status=400)
    assert parsed["Error"]["Code"] == "InvalidParameterValue"
    assert parsed["Error"]["Message"] == "Value <x> & 'y' is bad"
    assert parsed["ResponseMetadata"]["RequestId"] == "req-9"


# ------------------------------------------------- property tests over every operation in the model

class ShapeGen:
    """Random boto3-shaped values for a shape, valid by the model's traits (a seeded stand-in for
    Hypothesis, which the shared environment does not carry)."""

    TEXT = ["", "a", "x y", "é€😀", "a&b=c+d%20e", "<tag attr='1'>\"", " lead", "tail ", "dot.ted", "1"]

    def __init__(self, seed, *, output=False):
        self.rnd = random.Random(seed)
        self.output = output

    def value(self, shape, depth=0):
        kind, meta, rnd = shape.type_name, shape.metadata, self.rnd
        if kind == "structure":
            out = {}
            for name, member in shape.members.items():
                if name in shape.required_members or (depth < 4 and rnd.random() < 0.5):
                    out[name] = self.value(member, depth + 1)
            if not out and shape.members:  # an empty structure would vanish on the wire
                scalars = [n for n, m in shape.members.items() if m.type_name not in ("structure", "list")]
                name = rnd.choice(scalars or list(shape.members))
                out[name] = self.value(shape.members[name], depth + 1)
            return out
        if kind == "list":
            lo, hi = meta.get("min", 1), min(meta.get("max", 3), 3)
            return [self.value(shape.member, depth + 1) for _ in range(rnd.randint(max(lo, 1), max(hi, lo, 1)))]
        if kind == "string":
            if shape.enum:
                return rnd.choice(shape.enum)
            text = rnd.choice(self.TEXT) * rnd.randint(1, 3)
            lo, hi = meta.get("min", 0), meta.get("max", 10 ** 6)
            return (text + "z" * lo)[:hi]
        if kind in ("integer", "long"):
            return rnd.randint(meta.get("min", -(2 ** 40)), min(meta.get("max", 2 ** 40), 2 ** 40))
        if kind in ("double", "float"):
            lo, hi = meta.get("min", float("-inf")), meta.get("max", float("inf"))
            return rnd.choice([v for v in (0.0, 1.5, -2.25, 705638400.0, 1e-7, 3.141592653589793, 1e300, lo)
                               if lo <= v <= hi])
        if kind == "boolean":
            return rnd.random() < 0.5
        if kind == "timestamp":
            us = rnd.randint(0, 2 ** 41) * 1000 if self.output else rnd.randint(0, 2 ** 51)  # ms on output
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
        if kind == "blob":
            return rnd.randbytes(rnd.randint(1, 20))
        raise AssertionError(kind)


def prune(value):
    """What survives the EC2 wire: empty lists and structures send nothing (list items included)."""
    if isinstance(value, dict):
        value = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [v for v in map(prune, value) if v not in ({}, [])]
    return value


@pytest.mark.parametrize("seed", range(3))
def test_every_operation_request_roundtrip(seed):
    model = ec2_model()
    for name in model.operation_names:
        operation = model.operation_model(name)
        if operation.input_shape is None:
            continue
        params = ShapeGen(f"req-{seed}-{name}").value(operation.input_shape)
        body = _serializer.serialize_to_request(params, operation)["body"]
        pairs = urllib.parse.parse_qsl(urllib.parse.urlencode(body), keep_blank_values=True)
        pairs = [(k, v) for k, v in pairs if k not in ("Action", "Version")]
        assert parse_query(operation, pairs) == prune(params), name


@pytest.mark.parametrize("seed", range(3))
def test_every_operation_response_roundtrip(seed):
    model = ec2_model()
    parser = botocore.parsers.create_parser("ec2")
    for name in model.operation_names:
        operation = model.operation_model(name)
        if operation.output_shape is None:
            continue
        result = ShapeGen(f"{seed}-{name}", output=True).value(operation.output_shape)
        body = serialize_response(operation, result, "rid")
        parsed = parser.parse({"status_code": 200, "headers": {}, "body": body}, operation.output_shape)
        assert parsed.pop("ResponseMetadata")["RequestId"] == "rid", name
        assert parsed == result, name


def test_speed():
    operation = op("DescribeImages")
    pairs = urllib.parse.parse_qsl(CAPTURED["DescribeImages"][0])
    parse_query(operation, pairs)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        parse_query(operation, pairs)
    assert (time.perf_counter() - start) / n < 0.001
