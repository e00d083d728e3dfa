"""Bucket names and keys are checked against S3's rules when the import is asked for, and a
long user value is shortened wherever a message repeats it (issue 16 item 7)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from vmimport.messages import shorten
from vmimport.service.s3_names import bucket_problem, key_problem


@pytest.mark.parametrize("name", ["ab", "a" * 64, "Upper", "under_score", "-start", "end-",
                                  "two..dots", "a/b", "..", "192.168.1.1", "x" * 5000])
def test_bucket_names_s3_refuses(name):
    assert bucket_problem(name)


@pytest.mark.parametrize("name", ["bkt", "a" * 63, "my.bucket-1", "0ab"])
def test_bucket_names_s3_takes(name):
    assert bucket_problem(name) is None


def test_keys_are_at_most_1024_bytes_of_utf8():
    assert key_problem("k" * 1024) is None
    assert "1026" in key_problem("é" * 513)  # 513 characters, 1,026 bytes


def test_shorten():
    assert shorten("short") == "short"
    assert shorten("x" * 300) == "x" * 200 + "... (300 characters)"


def _refusal(call, **params) -> dict:
    with pytest.raises(ClientError) as err:
        call(**params)
    return err.value.response["Error"]


@pytest.mark.parametrize("container, parameter", [
    ({"UserBucket": {"S3Bucket": "b" * 5000, "S3Key": "k"}}, "UserBucket.S3Bucket"),
    ({"UserBucket": {"S3Bucket": "bkt", "S3Key": "k" * 300_000}}, "UserBucket.S3Key"),
    ({"UserBucket": {"S3Bucket": "../etc", "S3Key": "k"}}, "UserBucket.S3Bucket"),
    ({"Url": "s3://Bad_Bucket/k"}, "Url"),
])
def test_bad_names_are_refused_at_once_naming_the_parameter(ec2, container, parameter):
    error = _refusal(ec2.import_image, DiskContainers=[{"Format": "raw", **container}])
    assert error["Code"] == "InvalidParameterValue"
    assert f"for parameter DiskContainer.1.{parameter} is invalid" in error["Message"]
    assert len(error["Message"]) < 500, error["Message"]
    error = _refusal(ec2.import_snapshot, DiskContainer={"Format": "raw", **container})
    assert error["Code"] == "InvalidParameterValue"
    assert f"{parameter} is invalid" in error["Message"] and len(error["Message"]) < 500
