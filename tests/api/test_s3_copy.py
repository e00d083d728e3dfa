"""Server-side copies: CopyObject and UploadPartCopy with boto3 (copy-source forms, metadata
directive, conditional headers, ranges, another account's bucket) and the AWS CLI's
``aws s3 cp s3://a/x s3://b/y`` (CopyObject, and UploadPartCopy above its threshold)."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError

from .test_s3_objects import MiB, aws_cli, bucket_name, code_of, random_file, sha256_of


@pytest.fixture(scope="module")
def s3(server):
    return server.client("s3")


@pytest.fixture(scope="module")
def buckets(s3):
    source, target = bucket_name("copy-src"), bucket_name("copy-dst")
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=target)
    return source, target


def test_copy_object_across_buckets_and_metadata(s3, server, buckets):
    source, target = buckets
    data = os.urandom(200_000)
    put = s3.put_object(Bucket=source, Key="dir/a b+c.bin", Body=data, ContentType="x/src",
                        Metadata={"origin": "put"})
    # boto3 URL-encodes CopySource given as a dict; a string is sent as given
    copied = s3.copy_object(Bucket=target, Key="copied",
                            CopySource={"Bucket": source, "Key": "dir/a b+c.bin"})
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    assert (server.buckets / target / "copied").read_bytes() == data
    head = s3.head_object(Bucket=target, Key="copied")
    assert head["ContentType"] == "x/src" and head["Metadata"] == {"origin": "put"}
    assert head["ETag"] == put["ETag"]
    s3.copy_object(Bucket=target, Key="replaced", CopySource=f"/{source}/dir/a b+c.bin",
                   MetadataDirective="REPLACE", ContentType="x/new", Metadata={"n": "1"})
    head = s3.head_object(Bucket=target, Key="replaced")
    assert head["ContentType"] == "x/new" and head["Metadata"] == {"n": "1"}
    # onto itself: only with REPLACE (as S3)
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=target, Key="copied", CopySource=f"{target}/copied")
    assert code_of(info.value) == "InvalidRequest"
    s3.copy_object(Bucket=target, Key="copied", CopySource=f"{target}/copied?versionId=null",
                   MetadataDirective="REPLACE", Metadata={"again": "yes"})
    assert s3.head_object(Bucket=target, Key="copied")["Metadata"] == {"again": "yes"}
    assert (server.buckets / target / "copied").read_bytes() == data
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=target, Key="v", CopySource=f"{source}/dir/x?versionId=abc")
    assert code_of(info.value) == "InvalidArgument"
    for missing, code in ((f"{source}/nothing", "NoSuchKey"),
                          (f"{bucket_name('none')}/k", "NoSuchBucket")):
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket=target, Key="never", CopySource=missing)
        assert code_of(info.value) == code
    assert not (server.buckets / target / "never").exists()
    assert os.listdir(server.buckets / target / ".vmimport-uploads") == []


def test_copy_of_a_multipart_object_gets_its_md5(s3, server, buckets):
    source, target = buckets
    upload = s3.create_multipart_upload(Bucket=source, Key="mpu")["UploadId"]
    parts = [os.urandom(5 * MiB), b"tail"]
    etags = [s3.upload_part(Bucket=source, Key="mpu", UploadId=upload, PartNumber=n + 1,
                            Body=p)["ETag"] for n, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket=source, Key="mpu", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    copied = s3.copy_object(Bucket=target, Key="mpu-copy", CopySource=f"{source}/mpu")
    whole = b"".join(parts)
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(whole).hexdigest()}"'
    assert (server.buckets / target / "mpu-copy").read_bytes() == whole


def test_conditional_copy(s3, server, buckets):
    source, target = buckets
    put = s3.put_object(Bucket=source, Key="cond", Body=b"conditional")
    modified = s3.head_object(Bucket=source, Key="cond")["LastModified"]
    refused = [{"CopySourceIfMatch": '"0123"'},
               {"CopySourceIfNoneMatch": put["ETag"]},
               {"CopySourceIfUnmodifiedSince": modified - timedelta(days=1)},
               {"CopySourceIfModifiedSince": modified + timedelta(days=1)}]
    for headers in refused:
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket=target, Key="cond", CopySource=f"{source}/cond", **headers)
        assert code_of(info.value) == "PreconditionFailed", headers
        assert not (server.buckets / target / "cond").exists()
    # If-Match that holds wins over a failing If-Unmodified-Since (S3's rule)
    s3.copy_object(Bucket=target, Key="cond", CopySource=f"{source}/cond",
                   CopySourceIfMatch=put["ETag"],
                   CopySourceIfUnmodifiedSince=modified - timedelta(days=1))
    assert (server.buckets / target / "cond").read_bytes() == b"conditional"
    s3.copy_object(Bucket=target, Key="cond2", CopySource=f"{source}/cond",
                   CopySourceIfNoneMatch='"other"',
                   CopySourceIfModifiedSince=modified - timedelta(days=1))
    assert (server.buckets / target / "cond2").read_bytes() == b"conditional"


def test_upload_part_copy_ranges(s3, server, buckets):
    source, target = buckets
    data = os.urandom(10 * MiB + 11)
    s3.put_object(Bucket=source, Key="ranged", Body=data)
    upload = s3.create_multipart_upload(Bucket=target, Key="joined")["UploadId"]
    first = s3.upload_part_copy(Bucket=target, Key="joined", UploadId=upload, PartNumber=1,
                                CopySource={"Bucket": source, "Key": "ranged"},
                                CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    assert first["CopyPartResult"]["ETag"] == f'"{hashlib.md5(data[:5 * MiB]).hexdigest()}"'
    second = s3.upload_part_copy(Bucket=target, Key="joined", UploadId=upload, PartNumber=2,
                                 CopySource=f"{source}/ranged",
                                 CopySourceRange=f"bytes={5 * MiB}-{len(data) - 1}")
    third = s3.upload_part(Bucket=target, Key="joined", UploadId=upload, PartNumber=3,
                           Body=b"uploaded")
    for bad_range in ("bytes=5-", f"bytes=0-{len(data)}", "bytes=9-3"):
        with pytest.raises(ClientError) as info:
            s3.upload_part_copy(Bucket=target, Key="joined", UploadId=upload, PartNumber=4,
                                CopySource=f"{source}/ranged", CopySourceRange=bad_range)
        assert code_of(info.value) == "InvalidArgument", bad_range
    with pytest.raises(ClientError) as info:
        s3.upload_part_copy(Bucket=target, Key="joined", UploadId=upload, PartNumber=4,
                            CopySource=f"{source}/ranged", CopySourceIfMatch='"nope"')
    assert code_of(info.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as info:
        s3.upload_part_copy(Bucket=target, Key="joined", UploadId="0" * 48, PartNumber=1,
                            CopySource=f"{source}/ranged")
    assert code_of(info.value) == "NoSuchUpload"
    etags = [first["CopyPartResult"]["ETag"], second["CopyPartResult"]["ETag"], third["ETag"]]
    s3.complete_multipart_upload(Bucket=target, Key="joined", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    assert (server.buckets / target / "joined").read_bytes() == data + b"uploaded"


def test_copy_needs_both_buckets(server, s3, buckets):
    """Another account can neither copy out of this account's bucket into its own, nor copy
    its own object into this account's bucket."""
    source, _ = buckets
    s3.put_object(Bucket=source, Key="private", Body=b"secret")
    other = server.client("s3", "OTHERKEY", "othersecret")
    mine = bucket_name("other-own")
    other.create_bucket(Bucket=mine)
    other.put_object(Bucket=mine, Key="planted", Body=b"x")
    for call in (lambda: other.copy_object(Bucket=mine, Key="stolen",
                                           CopySource=f"{source}/private"),
                 lambda: other.copy_object(Bucket=source, Key="planted",
                                           CopySource=f"{mine}/planted")):
        with pytest.raises(ClientError) as info:
            call()
        assert code_of(info.value) == "AccessDenied"
    upload = other.create_multipart_upload(Bucket=mine, Key="stolen")["UploadId"]
    with pytest.raises(ClientError) as info:
        other.upload_part_copy(Bucket=mine, Key="stolen", UploadId=upload, PartNumber=1,
                               CopySource=f"{source}/private")
    assert code_of(info.value) == "AccessDenied"
    assert not (server.buckets / mine / "stolen").exists()
    assert not (server.buckets / source / "planted").exists()


@pytest.mark.parametrize("size", [3 * MiB, 20 * MiB + 5])
def test_aws_cli_copies_between_buckets(server, tmp_path, buckets, size):
    """Below the CLI's 8 MiB threshold it sends CopyObject, above it UploadPartCopy."""
    source, target = buckets
    original = random_file(tmp_path / "disk.raw", size, seed=size)
    aws_cli(server, "s3", "cp", str(original), f"s3://{source}/cli/disk.raw")
    aws_cli(server, "s3", "cp", f"s3://{source}/cli/disk.raw", f"s3://{target}/cli/copy.raw")
    assert sha256_of(server.buckets / target / "cli" / "copy.raw") == sha256_of(original)
    etag = server.client("s3").head_object(Bucket=target, Key="cli/copy.raw")["ETag"]
    assert etag.endswith('-3"') if size > 8 * MiB else "-" not in etag
