"""Refusals worded as EC2 words them (ec2-import-api.md §2.7-2.8 and EC2's own messages),
each sentence starting with a capital: scripts match on these texts."""

from __future__ import annotations

import re

import boto3
from botocore.config import Config

from .ami_fixtures import error_of, new_ami

MISSING_AMI = "ami-0123456789abcdef0"
MISSING_SNAP = "snap-0123456789abcdef0"


def _sentence_case(message: str) -> bool:
    return message[:1].isupper() and not re.search(r"[.!?] [a-z]", message)


def test_refusal_texts(server, ec2):
    unchecked = boto3.client("ec2", endpoint_url=server.endpoint, region_name="us-east-1",
                             aws_access_key_id="test", aws_secret_access_key="test",
                             config=Config(parameter_validation=False,
                                           retries={"max_attempts": 1}))
    bucket = {"Format": "RAW", "UserBucket": {"S3Bucket": "no-such-bucket", "S3Key": "k"}}
    texts = {
        "DryRunOperation": (ec2.describe_images, {"DryRun": True},
                            "Request would have succeeded, but DryRun flag is set."),
        "InvalidAMIID.NotFound": (ec2.describe_images, {"ImageIds": [MISSING_AMI]},
                                  f"The image id '[{MISSING_AMI}]' does not exist"),
        "InvalidSnapshot.NotFound": (ec2.describe_snapshots, {"SnapshotIds": [MISSING_SNAP]},
                                     f"The snapshot '{MISSING_SNAP}' does not exist."),
        "MissingParameter": (unchecked.deregister_image, {},
                             "The request must contain the parameter ImageId"),
        "InvalidParameter": (ec2.import_image, {"DiskContainers": [bucket],
                                                "RoleName": "no-such-role"},
                             "The service role no-such-role provided does not exist or does "
                             "not have sufficient permissions"),
    }
    for code, (call, arguments, text) in texts.items():
        error = error_of(call, **arguments)
        assert error["Code"] == code, error
        assert error["Message"].startswith(text), (error["Message"], text)
        assert _sentence_case(error["Message"]), error["Message"]

    readonly = server.client("ec2", access_key="READONLY", secret_key="readonlysecret")
    error = error_of(readonly.deregister_image, ImageId=MISSING_AMI)
    assert error["Code"] == "UnauthorizedOperation"
    assert error["Message"].startswith("You are not authorized to perform this operation")
    two = error_of(ec2.describe_images, ImageIds=[MISSING_AMI, "ami-0123456789abcdef1"])
    assert two["Message"] == \
        f"The image ids '[{MISSING_AMI}, ami-0123456789abcdef1]' do not exist"


def test_a_deregistered_image_is_unavailable_to_its_owner(server, ec2, tmp_path):
    """EC2 names an AMI its owner just deregistered ``InvalidAMIID.Unavailable`` (Ansible's
    ec2_ami waits for exactly that); to anyone else it is simply not found."""
    image_id = new_ami(server, ec2, tmp_path)["ImageId"]
    ec2.deregister_image(ImageId=image_id)
    error = error_of(ec2.describe_images, ImageIds=[image_id])
    assert error == {"Code": "InvalidAMIID.Unavailable",
                     "Message": f"The image id '[{image_id}]' is no longer available"}
    # Together with an id that never existed: NotFound, as before.
    assert error_of(ec2.describe_images, ImageIds=[image_id, MISSING_AMI])[
        "Code"] == "InvalidAMIID.NotFound"
    other = server.client("ec2", access_key="OTHERKEY", secret_key="othersecret")
    assert error_of(other.describe_images, ImageIds=[image_id])["Code"] == \
        "InvalidAMIID.NotFound"
