"""Keys that cannot be file paths here are refused with S3's InvalidArgument saying why (the
README lists them), by every operation that names a key, and none of them reaches anything
outside DATA_DIR/buckets/<bucket>: S3 allows any key of up to 1024 bytes, but objects here
are the very files imports read, so a key must be a relative path of plain segments."""

from __future__ import annotations

import os
import uuid

import pytest
from botocore.exceptions import ClientError

from .test_s3_objects import bucket_name, code_of

MARK = f"escape-{uuid.uuid4().hex[:8]}"  # a name only these keys use
HOSTILE = [f"../{MARK}", f"a/../../{MARK}", f"../../../../../../tmp/{MARK}", "a//b", "trailing/",
           "/leading", "./dot", "a/./b", "a/..", ".vmimport-uploads/x", "s" * 256 + "/x",
           "seg/" + "é" * 128]


def _tree(root) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        found.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return found


@pytest.fixture(scope="module")
def bucket(server):
    name = bucket_name("keys")
    s3 = server.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="a/b", Body=b"inside")
    return name


@pytest.mark.parametrize("key", HOSTILE)
def test_unstorable_keys_are_refused_and_nothing_escapes(server, bucket, key):
    s3 = server.client("s3")
    data_dir = server.buckets.parent
    before = _tree(data_dir)
    calls = {"PutObject": lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"planted"),
             "CopyObject": lambda: s3.copy_object(Bucket=bucket, Key=key,
                                                  CopySource=f"{bucket}/a/b"),
             "CreateMultipartUpload": lambda: s3.create_multipart_upload(Bucket=bucket,
                                                                         Key=key)}
    for name, call in calls.items():
        with pytest.raises(ClientError) as info:
            call()
        assert code_of(info.value) == "InvalidArgument", name
        assert "cannot be stored by this server" in info.value.response["Error"]["Message"]
    for call in (lambda: s3.get_object(Bucket=bucket, Key=key),
                 lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/{key}")):
        with pytest.raises(ClientError) as info:
            call()
        assert code_of(info.value) in ("InvalidArgument", "NoSuchKey")
    s3.delete_object(Bucket=bucket, Key=key)  # nothing to delete: no error, as on S3
    assert _tree(data_dir) - before == set()
    assert (server.buckets / bucket / "a" / "b").read_bytes() == b"inside"
    assert not any(MARK in p for p in _tree(data_dir.parent)) and not os.path.exists(f"/tmp/{MARK}")


def test_longest_keys_s3_allows(server, bucket):
    """1024 bytes in segments of at most 255 bytes is stored; one byte more is S3's own
    KeyTooLongError."""
    s3 = server.client("s3")
    key = "/".join(["k" * 254] * 4) + "/" + "k" * 4  # 4 * 255 + 4 = 1024 bytes
    assert len(key.encode()) == 1024
    s3.put_object(Bucket=bucket, Key=key, Body=b"long")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"long"
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key=key + "k", Body=b"longer")
    assert code_of(info.value) in ("KeyTooLongError", "InvalidArgument")
