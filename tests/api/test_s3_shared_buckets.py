"""Buckets of vmimport's own S3 API when the block store is an object store: two API processes
with separate data dirs (as on two machines) share one database and one SeaweedFS, and a bucket
made through either is the same bucket through both. Objects written through one read back
through the other byte for byte (single PUT and the AWS CLI's multipart), land in the store
under ``<prefix>buckets/`` and in no data dir; a body that fails its Content-MD5 never becomes
an object; an import asked of one process reads a bucket filled through the other, and an
export into such a bucket is read through the other; gc aborts abandoned uploads."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid

import pytest
from botocore.exceptions import ClientError

from ..conftest import CREDENTIALS
from ..helpers import BIN, Server, fresh_database_url, qemu_raw_sha256, snapshot_sha256, wait_task
from .test_export_image import same_disk, wait_export
from .test_object_block_store import s3  # noqa: F401 - the module's SeaweedFS fixture
from .test_s3_objects import aws_cli, code_of, random_file, sha256_of

MiB = 1024 * 1024
PREFIX = "t/"


@pytest.fixture(scope="module")
def store(s3):
    return s3  # test_object_block_store's: SeaweedFS with the bucket vmimport-blocks


@pytest.fixture(scope="module")
def pair(tmp_path_factory, store):
    """Two processes, each its own empty data dir, one database (SQLite file or PostgreSQL)."""
    base = tmp_path_factory.mktemp("shared")
    url = fresh_database_url() or f"sqlite:///{base / 'shared.db'}"
    env = {**store.blocks_env(f"s3://vmimport-blocks/{PREFIX}"),
           "VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS)}
    servers = []
    try:
        for name in ("one", "two"):
            servers.append(Server(base / name / "data", env=env, database_url=url).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def _name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def _store_keys(store, bucket: str) -> set[str]:
    pages = store.client().get_paginator("list_objects_v2").paginate(
        Bucket="vmimport-blocks", Prefix=f"{PREFIX}buckets/{bucket}/")
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_objects_written_through_one_process_read_back_through_the_other(pair, store, tmp_path):
    one, two = pair
    s3_one, s3_two = one.client("s3"), two.client("s3")
    bucket = _name("shared")
    s3_one.create_bucket(Bucket=bucket)
    assert bucket in {b["Name"] for b in s3_two.list_buckets()["Buckets"]}
    with pytest.raises(ClientError) as made:
        s3_two.create_bucket(Bucket=bucket)
    assert code_of(made.value) == "BucketAlreadyOwnedByYou"

    small = os.urandom(3 * MiB + 17)
    put = s3_one.put_object(Bucket=bucket, Key="dir/small.bin", Body=small,
                            ContentType="application/x-test", Metadata={"origin": "one"})
    assert put["ETag"] == f'"{hashlib.md5(small).hexdigest()}"'
    big = random_file(tmp_path / "big.bin", 21 * MiB + 5, seed=7)
    aws_cli(one, "s3", "cp", str(big), f"s3://{bucket}/dir/sub/big.bin")  # multipart, 8 MiB parts

    got = s3_two.get_object(Bucket=bucket, Key="dir/small.bin")
    assert got["Body"].read() == small
    assert got["ETag"] == put["ETag"] and got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"origin": "one"}
    ranged = s3_two.get_object(Bucket=bucket, Key="dir/small.bin", Range="bytes=100-199")
    assert ranged["Body"].read() == small[100:200]
    assert ranged["ContentRange"] == f"bytes 100-199/{len(small)}"
    aws_cli(two, "s3", "cp", f"s3://{bucket}/dir/sub/big.bin", str(tmp_path / "back.bin"))
    assert sha256_of(tmp_path / "back.bin") == sha256_of(big)
    head = s3_two.head_object(Bucket=bucket, Key="dir/sub/big.bin")
    assert head["ContentLength"] == big.stat().st_size and head["ETag"].endswith('-3"')

    with pytest.raises(ClientError) as unchanged:
        s3_two.get_object(Bucket=bucket, Key="dir/small.bin", IfNoneMatch=put["ETag"])
    assert unchanged.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as changed:
        s3_two.get_object(Bucket=bucket, Key="dir/small.bin", IfMatch='"0000"')
    assert code_of(changed.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as missing:
        s3_two.get_object(Bucket=bucket, Key="dir/none")
    assert code_of(missing.value) == "NoSuchKey"

    for n in range(3):
        s3_two.put_object(Bucket=bucket, Key=f"top{n}", Body=b"x" * n)
    listed = s3_one.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["top0", "top1", "top2"]
    assert listed["CommonPrefixes"] == [{"Prefix": "dir/"}]
    paged = [o["Key"] for page in s3_one.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}) for o in page.get("Contents", [])]
    assert paged == ["dir/small.bin", "dir/sub/big.bin", "top0", "top1", "top2"]
    v1 = [o["Key"] for page in s3_two.get_paginator("list_objects").paginate(
        Bucket=bucket, Prefix="dir/", PaginationConfig={"PageSize": 1})
        for o in page.get("Contents", [])]
    assert v1 == ["dir/small.bin", "dir/sub/big.bin"]
    ls = aws_cli(two, "s3", "ls", "--recursive", f"s3://{bucket}/dir/").stdout
    assert "dir/small.bin" in ls and "dir/sub/big.bin" in ls

    # Only the store has them: no data dir holds a byte.
    assert _store_keys(store, bucket) == {f"{PREFIX}buckets/{bucket}/{k}" for k in paged}
    for server in pair:
        assert not (server.buckets / bucket).exists()

    with pytest.raises(ClientError) as full:
        s3_two.delete_bucket(Bucket=bucket)
    assert code_of(full.value) == "BucketNotEmpty"
    deleted = s3_two.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k}
                                                                      for k in paged]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == paged
    s3_one.delete_bucket(Bucket=bucket)
    assert bucket not in {b["Name"] for b in s3_two.list_buckets()["Buckets"]}


def test_another_account_is_refused(pair):
    one, two = pair
    bucket = _name("mine")
    one.client("s3").create_bucket(Bucket=bucket)
    one.client("s3").put_object(Bucket=bucket, Key="k", Body=b"secret")
    other = two.client("s3", access_key="OTHERKEY", secret_key="othersecret")
    for call in (lambda: other.get_object(Bucket=bucket, Key="k"),
                 lambda: other.put_object(Bucket=bucket, Key="k2", Body=b"x"),
                 lambda: other.list_objects_v2(Bucket=bucket)):
        with pytest.raises(ClientError) as refused:
            call()
        assert code_of(refused.value) == "AccessDenied"
    assert bucket not in {b["Name"] for b in other.list_buckets()["Buckets"]}


def test_no_key_or_prefix_reaches_outside_its_bucket(pair, store):
    """The store may treat keys as paths: '..' and empty segments are refused, so no request
    through one bucket names another bucket's objects or the block store's packs."""
    one, _ = pair
    s3 = one.client("s3")
    victim, mine = _name("victim"), _name("mine")
    for bucket in (victim, mine):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=victim, Key="secret", Body=b"victim's bytes")
    for key in (f"../{victim}/secret", f"a/../../{victim}/secret", "a//b", "./x", "x/.."):
        for call in (lambda: s3.get_object(Bucket=mine, Key=key),
                     lambda: s3.put_object(Bucket=mine, Key=key, Body=b"x"),
                     lambda: s3.create_multipart_upload(Bucket=mine, Key=key),
                     lambda: s3.copy_object(Bucket=mine, Key="copy",
                                            CopySource={"Bucket": mine, "Key": key})):
            with pytest.raises(ClientError) as refused:
                call()
            assert code_of(refused.value) == "InvalidArgument", key
    for prefix in ("../", f"../{victim}/", "a/../", "..", "/"):
        for call in (lambda: s3.list_objects_v2(Bucket=mine, Prefix=prefix),
                     lambda: s3.list_objects(Bucket=mine, Prefix=prefix),
                     lambda: s3.list_multipart_uploads(Bucket=mine, Prefix=prefix)):
            with pytest.raises(ClientError) as refused:
                call()
            assert code_of(refused.value) == "InvalidArgument", prefix
    s3.delete_object(Bucket=mine, Key=f"../{victim}/secret")  # no such object here: no error
    s3.delete_objects(Bucket=mine, Delete={"Objects": [{"Key": f"../{victim}/secret"}]})
    assert s3.get_object(Bucket=victim, Key="secret")["Body"].read() == b"victim's bytes"
    assert _store_keys(store, mine) == set()


def test_a_body_that_fails_its_digest_never_becomes_an_object(pair, store):
    one, two = pair
    s3 = one.client("s3")
    bucket = _name("digest")
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(5 * MiB)
    wrong = "AAAAAAAAAAAAAAAAAAAAAA=="  # 16 zero bytes: not this body's MD5
    with pytest.raises(ClientError) as bad:
        s3.put_object(Bucket=bucket, Key="k", Body=body, ContentMD5=wrong)
    assert code_of(bad.value) == "BadDigest"
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    with pytest.raises(ClientError) as bad_part:
        s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=body,
                       ContentMD5=wrong)
    assert code_of(bad_part.value) == "BadDigest"
    assert s3.list_parts(Bucket=bucket, Key="m", UploadId=upload).get("Parts") is None
    with pytest.raises(ClientError) as gone:
        two.client("s3").head_object(Bucket=bucket, Key="k")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert _store_keys(store, bucket) == set()
    # Still usable: the same key with a good body; a bad body then leaves it as it was.
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    with pytest.raises(ClientError) as again:
        s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(5 * MiB), ContentMD5=wrong)
    assert code_of(again.value) == "BadDigest"
    assert two.client("s3").get_object(Bucket=bucket, Key="k")["Body"].read() == body


def test_multipart_copies_and_their_errors(pair):
    one, two = pair
    s3_one, s3_two = one.client("s3"), two.client("s3")
    bucket = _name("parts")
    s3_one.create_bucket(Bucket=bucket)
    part1, part2 = os.urandom(5 * MiB), os.urandom(MiB)
    upload = s3_one.create_multipart_upload(Bucket=bucket, Key="joined",
                                            ContentType="application/x-joined")["UploadId"]
    e1 = s3_one.upload_part(Bucket=bucket, Key="joined", UploadId=upload, PartNumber=1,
                            Body=part1)["ETag"]
    e2 = s3_two.upload_part(Bucket=bucket, Key="joined", UploadId=upload, PartNumber=2,
                            Body=part2)["ETag"]
    uploads = s3_two.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("joined", upload)]
    parts = s3_two.list_parts(Bucket=bucket, Key="joined", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == \
        [(1, e1, len(part1)), (2, e2, len(part2))]
    for wrong, code in (([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": '"00"'}],
                         "InvalidPart"),
                        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}],
                         "InvalidPartOrder"),
                        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 2, "ETag": e2}],
                         "InvalidPartOrder")):
        with pytest.raises(ClientError) as refused:
            s3_two.complete_multipart_upload(Bucket=bucket, Key="joined", UploadId=upload,
                                             MultipartUpload={"Parts": wrong})
        assert code_of(refused.value) == code
    done = s3_two.complete_multipart_upload(
        Bucket=bucket, Key="joined", UploadId=upload, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    expected_etag = hashlib.md5(bytes.fromhex(e1.strip('"')) + bytes.fromhex(e2.strip('"')))
    assert done["ETag"] == f'"{expected_etag.hexdigest()}-2"'
    got = s3_one.get_object(Bucket=bucket, Key="joined")
    assert got["Body"].read() == part1 + part2
    assert got["ContentType"] == "application/x-joined"

    small = s3_one.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    t1 = s3_one.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=1,
                            Body=b"a" * 10)["ETag"]
    t2 = s3_one.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=2,
                            Body=b"b")["ETag"]
    with pytest.raises(ClientError) as too_small:
        s3_one.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=small,
                                         MultipartUpload={"Parts": [
                                             {"PartNumber": 1, "ETag": t1},
                                             {"PartNumber": 2, "ETag": t2}]})
    assert code_of(too_small.value) == "EntityTooSmall"
    s3_two.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=small)
    with pytest.raises(ClientError) as aborted:
        s3_one.list_parts(Bucket=bucket, Key="small", UploadId=small)
    assert code_of(aborted.value) == "NoSuchUpload"

    # Copies between shared buckets, whole and by range (UploadPartCopy).
    other = _name("copies")
    s3_two.create_bucket(Bucket=other)
    copied = s3_two.copy_object(Bucket=other, Key="whole", CopySource=f"{bucket}/joined")
    assert s3_one.get_object(Bucket=other, Key="whole")["Body"].read() == part1 + part2
    assert copied["CopyObjectResult"]["ETag"]
    ranged = s3_one.create_multipart_upload(Bucket=other, Key="tail")["UploadId"]
    piece = s3_one.upload_part_copy(Bucket=other, Key="tail", UploadId=ranged, PartNumber=1,
                                    CopySource=f"{bucket}/joined",
                                    CopySourceRange=f"bytes={5 * MiB}-{6 * MiB - 1}")
    s3_one.complete_multipart_upload(Bucket=other, Key="tail", UploadId=ranged, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": piece["CopyPartResult"]["ETag"]}]})
    assert s3_two.get_object(Bucket=other, Key="tail")["Body"].read() == part2
    with pytest.raises(ClientError) as unmet:
        s3_one.copy_object(Bucket=other, Key="again", CopySource=f"{bucket}/joined",
                           CopySourceIfMatch='"0000"')
    assert code_of(unmet.value) == "PreconditionFailed"

    # A directory made by hand in one data dir stays a local bucket of that process, and a
    # copy between it and a shared bucket is refused clearly.
    (one.buckets / "handmade").mkdir(parents=True, exist_ok=True)
    (one.buckets / "handmade" / "file").write_bytes(b"local bytes")
    assert s3_one.get_object(Bucket="handmade", Key="file")["Body"].read() == b"local bytes"
    with pytest.raises(ClientError) as mixed:
        s3_one.copy_object(Bucket=other, Key="from-local", CopySource="handmade/file")
    assert code_of(mixed.value) == "NotImplemented"
    assert "data dir" in mixed.value.response["Error"]["Message"]


def test_an_import_and_an_export_across_processes(pair, store, disks):
    """A disk put through one process is imported by a task asked of the other; the AMI
    exported into a shared bucket through the second is read through the first."""
    one, two = pair
    s3_one = one.client("s3")
    images, exports = _name("images"), _name("exports")
    s3_one.create_bucket(Bucket=images)
    s3_one.upload_file(str(disks["vmdk"]), images, "disk.vmdk")
    two.client("s3").create_bucket(Bucket=exports)
    ec2 = two.client()
    task = wait_task(ec2, ec2.import_image(DiskContainers=[{
        "Format": "vmdk", "UserBucket": {"S3Bucket": images, "S3Key": "disk.vmdk"}}])
        ["ImportTaskId"])
    assert task["Status"] == "completed", task
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    assert snapshot_sha256(one.client("ebs"), task["SnapshotDetails"][0]["SnapshotId"],
                           size) == expected
    export = ec2.export_image(ImageId=task["ImageId"], DiskImageFormat="VMDK",
                              S3ExportLocation={"S3Bucket": exports, "S3Prefix": "vms/"})
    done = wait_export(ec2, export["ExportImageTaskId"])
    assert done["Status"] == "completed", done
    key = f"vms/{export['ExportImageTaskId']}.vmdk"
    local = one.data_dir.parent / "exported.vmdk"
    s3_one.download_file(exports, key, str(local))
    same_disk(disks["raw"], local, "vmdk")
    for server in pair:
        assert not (server.buckets / images).exists() and not (server.buckets / exports).exists()


def test_an_import_of_a_missing_key_in_a_shared_bucket_names_it(pair):
    one, two = pair
    bucket = _name("empty")
    one.client("s3").create_bucket(Bucket=bucket)
    ec2 = two.client()
    task = wait_task(ec2, ec2.import_snapshot(DiskContainer={
        "Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "absent.raw"}})
        ["ImportTaskId"], snapshot=True)
    detail = task["SnapshotTaskDetail"]
    assert detail["Status"] == "deleted", task
    assert detail["StatusMessage"] == (
        "ClientError: Disk validation failed [Invalid S3 source location] "
        f"s3://{bucket}/absent.raw: no such key")


def test_gc_aborts_abandoned_uploads_of_shared_buckets(pair, store):
    one, _ = pair
    s3 = one.client("s3")
    bucket = _name("abandoned")
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="left")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="left", UploadId=upload, PartNumber=1, Body=b"z" * MiB)
    gc = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(one.data_dir),
                         "--database-url", one.database_url],
                        env={**one.env, "VMIMPORT_S3_ABANDONED_UPLOAD_DAYS": "0"},
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads") is None
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="left", UploadId=upload)
    assert code_of(gone.value) == "NoSuchUpload"


def test_with_a_file_block_store_a_bucket_made_elsewhere_is_named(tmp_path):
    """Two processes sharing a database but each its own file block store (no object store):
    a bucket made through one is in that one's data dir, and an import through the other says
    so instead of "no such bucket"."""
    url = fresh_database_url() or f"sqlite:///{tmp_path / 'shared.db'}"
    one = Server(tmp_path / "one" / "data", database_url=url, workers=0).start()
    try:
        two = Server(tmp_path / "two" / "data", database_url=url).start()
        try:
            s3 = one.client("s3")
            s3.create_bucket(Bucket="made-on-one")
            s3.put_object(Bucket="made-on-one", Key="disk.raw", Body=b"\1" * MiB)
            assert (one.buckets / "made-on-one" / "disk.raw").exists()
            ec2 = two.client()
            task = wait_task(ec2, ec2.import_snapshot(DiskContainer={
                "Format": "raw", "UserBucket": {"S3Bucket": "made-on-one", "S3Key": "disk.raw"}})
                ["ImportTaskId"], snapshot=True)
        finally:
            two.stop()
    finally:
        one.stop()
    detail = task["SnapshotTaskDetail"]
    assert detail["Status"] == "deleted", task
    assert detail["StatusMessage"].startswith(
        "ClientError: Disk validation failed [Invalid S3 source location] bucket made-on-one "
        "was made through vmimport's S3 API by a process on another machine"), detail
    assert "only when the block store is an object store" in detail["StatusMessage"]
