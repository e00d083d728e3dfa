"""S3 requests of an assumed role are authorized under IAM's S3 action names, not the
operations' names: ListObjectsV2 needs s3:ListBucket, HeadObject s3:GetObject, a multipart
upload s3:PutObject, ListParts s3:ListMultipartUploadParts."""

from __future__ import annotations

import uuid

from .test_sts import OTHER, client, error, make_role


def _session(server, actions: list[str]) -> dict:
    arn = make_role(server, f"arn:aws:iam::{OTHER}:root", actions)
    return server.client("sts", "OTHERKEY", "othersecret").assume_role(
        RoleArn=arn, RoleSessionName="s3-test")["Credentials"]


def _denied(call, permission: str, **kwargs) -> None:
    refused = error(call, **kwargs)
    assert refused["Code"] == "AccessDenied", refused
    assert f"s3:{permission}" in refused["Message"], refused


def test_reader_role_reads_and_lists_only(server):
    bucket = "role-s3-" + uuid.uuid4().hex[:8]
    owner = server.client("s3")
    owner.create_bucket(Bucket=bucket)
    owner.put_object(Bucket=bucket, Key="disk.raw", Body=b"x" * 1000)
    s3 = client(server, "s3", _session(server, ["s3:ListBucket", "s3:GetObject"]))

    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["disk.raw"]
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == ["disk.raw"]
    s3.head_bucket(Bucket=bucket)
    assert s3.head_object(Bucket=bucket, Key="disk.raw")["ContentLength"] == 1000
    assert s3.get_object(Bucket=bucket, Key="disk.raw")["Body"].read() == b"x" * 1000

    _denied(s3.put_object, "PutObject", Bucket=bucket, Key="new", Body=b"y")
    _denied(s3.create_multipart_upload, "PutObject", Bucket=bucket, Key="big")
    _denied(s3.delete_object, "DeleteObject", Bucket=bucket, Key="disk.raw")
    _denied(s3.list_buckets, "ListAllMyBuckets")
    _denied(s3.list_multipart_uploads, "ListBucketMultipartUploads", Bucket=bucket)
    _denied(s3.create_bucket, "CreateBucket", Bucket=bucket + "-2")


def test_uploader_role_runs_a_multipart_upload(server):
    bucket = "role-s3-" + uuid.uuid4().hex[:8]
    owner = server.client("s3")
    owner.create_bucket(Bucket=bucket)
    s3 = client(server, "s3", _session(
        server, ["s3:PutObject", "s3:ListMultipartUploadParts", "s3:ListAllMyBuckets"]))

    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1,
                          Body=b"z" * 4096)
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="big",
                                                   UploadId=upload)["Parts"]] == [1]
    _denied(s3.abort_multipart_upload, "AbortMultipartUpload", Bucket=bucket, Key="big",
            UploadId=upload)
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert owner.get_object(Bucket=bucket, Key="big")["Body"].read() == b"z" * 4096

    _denied(s3.list_objects_v2, "ListBucket", Bucket=bucket)
    _denied(s3.get_object, "GetObject", Bucket=bucket, Key="big")
    # A HEAD answer has no body: only its status says why.
    assert error(s3.head_object, Bucket=bucket, Key="big")["Code"] == "403"
    assert error(s3.head_bucket, Bucket=bucket)["Code"] == "403"


def test_copy_needs_get_object_on_the_source_and_put_object_on_the_target(server):
    bucket = "role-s3-" + uuid.uuid4().hex[:8]
    owner = server.client("s3")
    owner.create_bucket(Bucket=bucket)
    owner.put_object(Bucket=bucket, Key="disk.raw", Body=b"c" * 2048)
    source = {"Bucket": bucket, "Key": "disk.raw"}

    writer = client(server, "s3", _session(server, ["s3:PutObject"]))
    _denied(writer.copy_object, "GetObject", Bucket=bucket, Key="copy", CopySource=source)
    upload = owner.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    _denied(writer.upload_part_copy, "GetObject", Bucket=bucket, Key="parts", UploadId=upload,
            PartNumber=1, CopySource=source)

    reader = client(server, "s3", _session(server, ["s3:GetObject"]))
    _denied(reader.copy_object, "PutObject", Bucket=bucket, Key="copy", CopySource=source)

    both = client(server, "s3", _session(server, ["s3:GetObject", "s3:PutObject"]))
    both.copy_object(Bucket=bucket, Key="copy", CopySource=source)
    assert owner.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"c" * 2048
