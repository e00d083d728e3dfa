"""S3 on vmimport's endpoint with real clients: boto3 (path and virtual-hosted style) and the
AWS CLI (aws s3 mb / cp / ls), objects read back byte for byte."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ..helpers import BIN

MiB = 1024 * 1024


def bucket_name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def s3(server):
    return server.client("s3")


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as f:
        for n in range(size // MiB):
            f.write(hashlib.sha256(f"{seed}:{n}".encode()).digest() + block[32:])
        f.write(os.urandom(size % MiB))
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def aws_cli(server, *args, config: str | None = None, tmp_path: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """The AWS CLI with an optional config file (e.g. s3 multipart settings)."""
    config_file = "/dev/null"
    if config is not None:
        config_file = str(tmp_path / "aws-config")
        Path(config_file).write_text(config)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": config_file,
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_MAX_ATTEMPTS": "1"}
    proc = subprocess.run([str(BIN / "aws"), "--endpoint-url", server.endpoint, *args],
                          env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed: {proc.stderr}")
    return proc


def test_bucket_lifecycle(s3, server):
    name = bucket_name("life")
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=name)
    assert code_of(info.value) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=name)
    assert code_of(info.value) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert not (server.buckets / name).exists()
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize("name", ["ab", "Upper-case", "-dash", "a..b", "192.168.1.1",
                                  "x" * 64, "under_score"])
def test_invalid_bucket_names(s3, name):
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=name)
    assert code_of(info.value) == "InvalidBucketName"


def test_put_get_head_and_errors(s3):
    name = bucket_name("objs")
    s3.create_bucket(Bucket=name)
    data = os.urandom(300_000)
    put = s3.put_object(Bucket=name, Key="dir/sub/file.bin", Body=data, ContentType="x/y",
                        Metadata={"purpose": "test"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=name, Key="dir/sub/file.bin")
    assert got["Body"].read() == data and got["ContentType"] == "x/y"
    assert got["Metadata"] == {"purpose": "test"} and got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=name, Key="dir/sub/file.bin")
    assert head["ContentLength"] == len(data)
    ranged = s3.get_object(Bucket=name, Key="dir/sub/file.bin", Range="bytes=100-199")
    assert ranged["Body"].read() == data[100:200]
    assert ranged["ContentRange"] == f"bytes 100-199/{len(data)}"
    tail = s3.get_object(Bucket=name, Key="dir/sub/file.bin", Range="bytes=-10")
    assert tail["Body"].read() == data[-10:]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=name, Key="dir/sub/file.bin", Range=f"bytes={len(data)}-")
    assert code_of(info.value) == "InvalidRange"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=name, Key="dir/sub/file.bin", IfMatch='"0000"')
    assert code_of(info.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=name, Key="dir/sub/file.bin", IfNoneMatch=put["ETag"])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=name, Key="dir/sub/file.bin", IfModifiedSince=got["LastModified"])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=name, Key="missing")
    assert code_of(info.value) == "NoSuchKey"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket_name("none"), Key="k")
    assert code_of(info.value) == "NoSuchBucket"


def test_bad_content_md5_leaves_nothing(s3, server):
    import base64
    name = bucket_name("md5")
    s3.create_bucket(Bucket=name)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=name, Key="k", Body=b"payload", ContentMD5=wrong)
    assert code_of(info.value) == "BadDigest"
    assert not (server.buckets / name / "k").exists()
    assert os.listdir(server.buckets / name / ".vmimport-uploads") == []


def test_listing_prefix_delimiter_paging(s3):
    name = bucket_name("list")
    s3.create_bucket(Bucket=name)
    keys = ["a/1", "a/2", "a/b/3", "a-x", "b", "c/d/e"]
    for key in keys:
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    everything = s3.list_objects_v2(Bucket=name)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys)
    top = s3.list_objects_v2(Bucket=name, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a-x", "b"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "c/"]
    under = s3.list_objects_v2(Bucket=name, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in under["CommonPrefixes"]] == ["a/b/"]
    seen, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket=name, MaxKeys=2,
                                  **({"ContinuationToken": token} if token else {}))
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys)
    v1 = s3.list_objects(Bucket=name, Prefix="a", MaxKeys=2)
    assert [o["Key"] for o in v1["Contents"]] == ["a-x", "a/1"] and v1["IsTruncated"]
    v1 = s3.list_objects(Bucket=name, Prefix="a", Marker="a/1")
    assert [o["Key"] for o in v1["Contents"]] == ["a/2", "a/b/3"]
    paginator = s3.get_paginator("list_objects")
    assert [o["Key"] for p in paginator.paginate(Bucket=name, PaginationConfig={"PageSize": 2})
            for o in p.get("Contents", [])] == sorted(keys)
    result = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(keys)
    assert s3.list_objects_v2(Bucket=name)["KeyCount"] == 0


def test_multipart_by_hand(s3, server):
    name = bucket_name("mpu")
    s3.create_bucket(Bucket=name)
    upload = s3.create_multipart_upload(Bucket=name, Key="big")["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=name)["Uploads"]] == [upload]
    first, second = os.urandom(5 * MiB), os.urandom(1000)
    e1 = s3.upload_part(Bucket=name, Key="big", UploadId=upload, PartNumber=1, Body=first)["ETag"]
    e2 = s3.upload_part(Bucket=name, Key="big", UploadId=upload, PartNumber=2, Body=second)["ETag"]
    parts = s3.list_parts(Bucket=name, Key="big", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MiB), (2, 1000)]
    for wrong, code in (([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}],
                         "InvalidPartOrder"),
                        ([{"PartNumber": 1, "ETag": e2}], "InvalidPart"),
                        ([{"PartNumber": 3, "ETag": e2}], "InvalidPart")):
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=name, Key="big", UploadId=upload,
                                         MultipartUpload={"Parts": wrong})
        assert code_of(info.value) == code
    assert not (server.buckets / name / "big").exists()  # nothing visible before completion
    done = s3.complete_multipart_upload(Bucket=name, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    md5s = hashlib.md5(hashlib.md5(first).digest() + hashlib.md5(second).digest()).hexdigest()
    assert done["ETag"] == f'"{md5s}-2"'
    assert (server.buckets / name / "big").read_bytes() == first + second
    assert s3.head_object(Bucket=name, Key="big")["ETag"] == done["ETag"]
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket=name, Key="big", UploadId=upload)
    assert code_of(info.value) == "NoSuchUpload"

    small = s3.create_multipart_upload(Bucket=name, Key="small")["UploadId"]
    etags = [s3.upload_part(Bucket=name, Key="small", UploadId=small, PartNumber=n,
                            Body=b"x" * 10)["ETag"] for n in (1, 2)]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=name, Key="small", UploadId=small, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]})
    assert code_of(info.value) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=name, Key="small", UploadId=small)
    assert os.listdir(server.buckets / name / ".vmimport-uploads") == []
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=name)


def test_boto3_transfer_default_checksums(s3, server, tmp_path):
    """upload_file / download_file as boto3 does them by default (multipart above 8 MiB,
    CRC32 checksums)."""
    name = bucket_name("xfer")
    s3.create_bucket(Bucket=name)
    source = random_file(tmp_path / "src.bin", 20 * MiB + 123)
    s3.upload_file(str(source), name, "disk.raw")
    assert sha256_of(server.buckets / name / "disk.raw") == sha256_of(source)
    s3.download_file(name, "disk.raw", str(tmp_path / "back.bin"))
    assert sha256_of(tmp_path / "back.bin") == sha256_of(source)
    assert s3.head_object(Bucket=name, Key="disk.raw")["ETag"].endswith('-3"')


def test_virtual_hosted_style(server, tmp_path):
    client = boto3.client("s3", endpoint_url=f"http://localhost:{server.port}",
                          region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test",
                          config=Config(s3={"addressing_style": "virtual"},
                                        retries={"max_attempts": 1}))
    name = bucket_name("vhost")
    sent_hosts = []

    def to_loopback(request, **_):
        # <bucket>.localhost need not resolve on the test machine: connect to 127.0.0.1 and
        # send the Host the client signed, as a resolver for *.localhost would make it.
        scheme, _, rest = request.url.partition("://")
        host, _, path = rest.partition("/")
        request.headers["Host"] = host
        sent_hosts.append(host)
        request.url = f"{scheme}://127.0.0.1:{server.port}/{path}"

    client.meta.events.register("before-send.s3.*", to_loopback)
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="v/key", Body=b"virtual")
    assert client.get_object(Bucket=name, Key="v/key")["Body"].read() == b"virtual"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]] == ["v/key"]
    assert (server.buckets / name / "v" / "key").read_bytes() == b"virtual"
    assert sent_hosts and all(h == f"{name}.localhost:{server.port}" for h in sent_hosts)


@pytest.mark.parametrize("config", [None, "[default]\ns3 =\n  multipart_chunksize = 5MB\n"
                                          "  multipart_threshold = 5MB\n"])
def test_aws_cli_mb_cp_ls(server, tmp_path, config):
    name = bucket_name("cli")
    aws_cli(server, "s3", "mb", f"s3://{name}")
    source = random_file(tmp_path / "disk.raw", 40 * MiB + 7, seed=3)
    aws_cli(server, "s3", "cp", str(source), f"s3://{name}/images/", config=config,
            tmp_path=tmp_path)
    listing = aws_cli(server, "s3", "ls", f"s3://{name}/images/").stdout
    assert "disk.raw" in listing and str(40 * MiB + 7) in listing
    assert f"{name}" in aws_cli(server, "s3", "ls").stdout
    aws_cli(server, "s3", "cp", f"s3://{name}/images/disk.raw", str(tmp_path / "back.raw"),
            config=config, tmp_path=tmp_path)
    assert sha256_of(tmp_path / "back.raw") == sha256_of(source)
    assert sha256_of(server.buckets / name / "images" / "disk.raw") == sha256_of(source)
    parts = 9 if config else 6  # 40 MiB + 7 bytes in 5 MiB parts, or the CLI's default 8 MiB
    etag = server.client("s3").head_object(Bucket=name, Key="images/disk.raw")["ETag"]
    assert etag.endswith(f'-{parts}"')
    aws_cli(server, "s3", "rm", f"s3://{name}/images/disk.raw")
    aws_cli(server, "s3", "rb", f"s3://{name}")


def test_presigned_urls(server):
    import urllib.error
    import urllib.request
    name = bucket_name("presign")
    legacy = server.client("s3")  # boto3 presigns S3 with SigV2 unless told otherwise
    legacy.create_bucket(Bucket=name)
    v2_url = legacy.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "k"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(v2_url, timeout=30)
    assert info.value.code == 403 and b"SigV4 is required" in info.value.read()
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(signature_version="s3v4"))
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": name, "Key": "p/k"},
                                        ExpiresIn=300)
    request = urllib.request.Request(put_url, data=b"presigned body", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "p/k"},
                                        ExpiresIn=300)
    with urllib.request.urlopen(get_url, timeout=30) as response:
        assert response.read() == b"presigned body"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(get_url.replace("p/k", "p/other"), timeout=30)
    assert info.value.code == 403 and b"SignatureDoesNotMatch" in info.value.read()


def _holders(pid: int, path: Path) -> int:
    """How many descriptors of process ``pid`` (or its children) have ``path`` open."""
    import psutil
    count = 0
    for proc in [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            count += sum(1 for f in proc.open_files() if f.path == str(path))
    return count


def test_downloads_cut_off_release_the_object(server, tmp_path):
    """Clients that hang up mid-GetObject (a chunk being read ahead on a transfer thread) leave
    no descriptor of the object open, and the server serves the whole object afterwards."""
    import socket
    import time
    import urllib.request
    name = bucket_name("cutoff")
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(signature_version="s3v4"))
    s3.create_bucket(Bucket=name)
    source = random_file(tmp_path / "big.bin", 48 * MiB, seed=9)
    s3.upload_file(str(source), name, "big.bin")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "big.bin"},
                                    ExpiresIn=600)
    path = url.split(str(server.port), 1)[1]
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
                         .encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 60  # a generous wait for the server to notice, not a timing
    while _holders(server.proc.pid, server.buckets / name / "big.bin") and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert _holders(server.proc.pid, server.buckets / name / "big.bin") == 0
    with urllib.request.urlopen(url, timeout=60) as response:
        assert hashlib.sha256(response.read()).hexdigest() == sha256_of(source)
