"""vmimport.pipeline.source: local bucket directories (incl. path-escape attempts) and a real
S3 endpoint (SeaweedFS, one server for this module)."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from pathlib import Path

import pytest
from botocore.exceptions import ResponseStreamingError

from tests.s3server import S3Server
from vmimport.config import Settings
from vmimport.pipeline import source as source_mod
from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline.source import FORBIDDEN, INVALID_LOCATION, open_source

MIB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(src, chunk_size=64 * 1024) -> bytes:
    return b"".join(src.stream(chunk_size=chunk_size))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", s3_endpoint_url="")


@pytest.fixture
def bucket(settings) -> Path:
    path = settings.buckets_dir / "images"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def payload() -> bytes:
    return os.urandom(3 * MIB + 12345)  # not a multiple of any chunk size


# ---------------------------------------------------------------- local bucket directories

def test_local_file_read_whole_by_stream_and_read_at(settings, bucket, payload):
    (bucket / "disk.raw").write_bytes(payload)
    src = open_source(settings, bucket="images", key="disk.raw")
    try:
        assert src.size == len(payload)
        assert src.description == "s3://images/disk.raw"
        assert sha(read_all(src)) == sha(payload)
        pieces = [src.read_at(off, 1 * MIB) for off in range(0, src.size, 1 * MIB)]
        assert sha(b"".join(pieces)) == sha(payload)
        assert b"".join(src.stream(offset=1000, chunk_size=MIB)) == payload[1000:]
        assert src.read_at(src.size - 10, 100) == payload[-10:]  # short only at EOF
        assert src.read_at(src.size, 10) == b""
        assert src.read_at(src.size + 5, 10) == b""
        assert src.read_at(7, 0) == b""
    finally:
        src.close()
    src.close()  # idempotent


def test_local_subdirectory_key(settings, bucket):
    (bucket / "a" / "b").mkdir(parents=True)
    (bucket / "a" / "b" / "disk.vmdk").write_bytes(b"KDMV" * 100)
    with open_source(settings, bucket="images", key="a/b/disk.vmdk") as src:
        assert src.size == 400 and read_all(src) == b"KDMV" * 100


def test_local_empty_file(settings, bucket):
    (bucket / "empty").write_bytes(b"")
    with open_source(settings, bucket="images", key="empty") as src:
        assert src.size == 0 and list(src.stream()) == [] and src.read_at(0, 10) == b""


def test_symlink_inside_bucket_is_not_followed(settings, bucket, payload):
    # Even a link that stays inside: no link under buckets/ is ever followed.
    (bucket / "real.raw").write_bytes(payload)
    (bucket / "alias.raw").symlink_to("real.raw")
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="images", key="alias.raw")
    assert "links under buckets/ are never followed" in info.value.message


def test_bucket_that_is_a_symlink_refused(settings, bucket, payload):
    (bucket / "real.raw").write_bytes(payload)
    (bucket.parent / "alias").symlink_to(bucket)
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="alias", key="real.raw")
    assert "symbolic link" in info.value.message


@pytest.fixture
def secret(settings) -> Path:
    path = settings.data_dir / "secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"top secret")
    return path


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every path vmimport opens during the test."""
    seen: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        seen.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(source_mod.os, "open", spy)
    return seen


@pytest.mark.parametrize("make_key", [
    lambda secret: "../secret",
    lambda secret: "sub/../../secret",
    lambda secret: str(secret),  # absolute
    lambda secret: "../secret\x00.raw",
    lambda secret: "disk\x00.raw",
], ids=["dotdot", "nested-dotdot", "absolute", "nul-dotdot", "nul"])
def test_traversal_refused(settings, bucket, secret, opened, make_key):
    (bucket / "sub").mkdir()
    (bucket / "disk").write_bytes(b"x")
    key = make_key(secret)
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="images", key=key)
    assert info.value.kind == "ClientError"
    assert info.value.message.startswith(f"{INVALID_LOCATION} the key '")
    assert "\x00" not in info.value.message
    assert opened == []


def test_symlink_escaping_bucket_refused(settings, bucket, secret, opened):
    (bucket / "link.raw").symlink_to(secret)
    (bucket / "dirlink").symlink_to(secret.parent)
    for key in ("link.raw", "dirlink/secret"):
        with pytest.raises(ImportFailure) as info:
            open_source(settings, bucket="images", key=key)
        assert info.value.message.startswith(f"{INVALID_LOCATION} s3://images/{key}: a "
                                             "symbolic link is in the way")
    assert not any(path.endswith("secret") for path in opened)


def test_bad_bucket_names_refused(settings, bucket, secret):
    for name in ("..", ".", "images/../..", "a\x00b"):
        with pytest.raises(ImportFailure) as info:
            open_source(settings, bucket=name, key="secret")
        assert info.value.message.startswith(f"{INVALID_LOCATION} bucket name ")


def test_missing_key(settings, bucket):
    (bucket / "file.raw").write_bytes(b"x")
    for key in ("nope.raw", "nodir/nope.raw", "file.raw/below"):
        with pytest.raises(ImportFailure) as info:
            open_source(settings, bucket="images", key=key)
        assert info.value.message == f"{INVALID_LOCATION} s3://images/{key}: no such key"
        assert info.value.status_message.startswith("ClientError: Disk validation failed")


def test_missing_bucket_without_s3(settings, bucket):
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="other", key="disk.raw")
    assert info.value.message == (
        f"{INVALID_LOCATION} bucket 'other' does not exist: no directory "
        f"{settings.buckets_dir / 'other'} and no S3 endpoint configured "
        "(VMIMPORT_S3_ENDPOINT_URL)")


def test_key_is_a_directory(settings, bucket):
    (bucket / "dir").mkdir()
    for key, why in (("dir", "is a directory"), ("dir/", "is not allowed"),
                     (".", "is not allowed")):
        with pytest.raises(ImportFailure) as info:
            open_source(settings, bucket="images", key=key)
        assert why in info.value.message
        assert info.value.message.startswith(INVALID_LOCATION)


def test_fifo_refused_without_blocking(settings, bucket):
    os.mkfifo(bucket / "pipe")
    with pytest.raises(ImportFailure, match="is not a regular file"):
        open_source(settings, bucket="images", key="pipe")


# ---------------------------------------------------------------- URLs

def test_s3_url_resolves_to_local_bucket(settings, bucket, payload):
    (bucket / "x").mkdir()
    (bucket / "x" / "disk.raw").write_bytes(payload)
    with open_source(settings, url="s3://images/x/disk.raw") as src:
        assert src.description == "s3://images/x/disk.raw"
        assert sha(read_all(src)) == sha(payload)


@pytest.mark.parametrize("scheme", ["https", "http", "HTTPS"])
def test_http_urls_disabled_by_default(settings, scheme):
    url = f"{scheme}://example.com/disk.vmdk?X-Amz-Signature=abc"
    with pytest.raises(ImportFailure) as info:
        open_source(settings, url=url)
    assert info.value.message.startswith(
        f"Disk validation failed [Unsupported URL] {scheme.lower()}:// URLs are disabled on this "
        "server")
    assert "Signature" not in info.value.message


@pytest.mark.parametrize("url, why", [
    ("https://other.example/disk.vmdk", "is not a host this server may fetch from"),
    ("http://images.example/disk.vmdk", "plain http:// URLs are disabled"),
    ("https://user:pw@images.example/disk.vmdk", "is not a host this server may fetch from"),
])
def test_http_url_allow_list(tmp_path, url, why):
    settings = Settings(data_dir=tmp_path, url_allowed_hosts=["images.example"])
    with pytest.raises(ImportFailure, match=why) as info:
        open_source(settings, url=url)
    assert "pw" not in info.value.message


@pytest.mark.parametrize("url, expected", [
    ("file:///etc/passwd", "'file'://"),
    ("ftp://host/disk.raw", "'ftp'://"),
    ("images/disk.raw", "has no scheme"),
    ("s3://images", "is not of the form s3://bucket/key"),
    ("s3:///disk.raw", "is not of the form s3://bucket/key"),
])
def test_other_urls_refused(settings, url, expected):
    with pytest.raises(ImportFailure) as info:
        open_source(settings, url=url)
    assert info.value.message.startswith(INVALID_LOCATION) and expected in info.value.message


# ---------------------------------------------------------------- a real S3 endpoint

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("seaweedfs")) as server:
        client = server.client()
        client.create_bucket(Bucket="remote")
        yield server


@pytest.fixture(scope="module")
def remote_payload(s3) -> bytes:
    data = os.urandom(5 * MIB + 777)
    s3.client().put_object(Bucket="remote", Key="dir/disk.raw", Body=data)
    return data


def s3_settings(tmp_path: Path, s3: S3Server, **overrides) -> Settings:
    values = dict(data_dir=tmp_path / "data", s3_endpoint_url=s3.endpoint_url,
                  s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)
    return Settings(**{**values, **overrides})


def test_s3_stream_and_size(tmp_path, s3, remote_payload):
    with open_source(s3_settings(tmp_path, s3), bucket="remote", key="dir/disk.raw") as src:
        assert src.size == len(remote_payload)
        assert src.description == "s3://remote/dir/disk.raw"
        chunks = list(src.stream(chunk_size=256 * 1024))
        assert all(len(c) == 256 * 1024 for c in chunks[:-1])
        assert sha(b"".join(chunks)) == sha(remote_payload)
        assert b"".join(src.stream(offset=MIB + 3, chunk_size=MIB)) == remote_payload[MIB + 3:]


def test_s3_read_at(tmp_path, s3, remote_payload):
    with open_source(s3_settings(tmp_path, s3), url="s3://remote/dir/disk.raw") as src:
        size = src.size
        for offset, length in [(0, 512), (12345, 4096), (3 * MIB, MIB), (size - 100, 4096)]:
            assert src.read_at(offset, length) == remote_payload[offset:offset + length]
        assert src.read_at(size, 10) == b""
        assert src.read_at(size + MIB, 10) == b""
        assert src.read_at(10, 0) == b""


def test_s3_stream_resumes_after_dropped_connection(tmp_path, s3, remote_payload):
    with open_source(s3_settings(tmp_path, s3), bucket="remote", key="dir/disk.raw") as src:
        real_get = src._client.get_object
        ranges: list[str] = []

        def flaky_get(**kwargs):
            ranges.append(kwargs["Range"])
            if len(ranges) == 2:  # the second chunk's first try breaks off mid-body
                raise ResponseStreamingError(error="connection reset")
            return real_get(**kwargs)

        src._client.get_object = flaky_get
        assert sha(read_all(src, chunk_size=2 * MIB)) == sha(remote_payload)
        assert ranges[1] == ranges[2] == f"bytes={2 * MIB}-{4 * MIB - 1}"


def test_s3_object_replaced_while_reading(tmp_path, s3):
    client = s3.client()
    client.put_object(Bucket="remote", Key="changing.raw", Body=b"a" * MIB)
    with open_source(s3_settings(tmp_path, s3), bucket="remote", key="changing.raw") as src:
        stream = src.stream(chunk_size=256 * 1024)
        next(stream)
        client.put_object(Bucket="remote", Key="changing.raw", Body=b"b" * MIB)
        with pytest.raises(ImportFailure, match="changed while it was being read"):
            list(stream)


def test_s3_empty_object(tmp_path, s3):
    s3.client().put_object(Bucket="remote", Key="empty", Body=b"")
    with open_source(s3_settings(tmp_path, s3), bucket="remote", key="empty") as src:
        assert src.size == 0 and list(src.stream()) == [] and src.read_at(0, 1) == b""


def test_s3_missing_key_and_bucket(tmp_path, s3, remote_payload):
    settings = s3_settings(tmp_path, s3)
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="remote", key="dir/nope.raw")
    assert info.value.message == f"{INVALID_LOCATION} s3://remote/dir/nope.raw: no such key"
    with pytest.raises(ImportFailure) as info:
        open_source(settings, url="s3://nobucket/disk.raw")
    assert info.value.message == f"{INVALID_LOCATION} s3://nobucket/disk.raw: no such bucket"
    assert info.value.kind == "ClientError"


def test_s3_wrong_secret_is_403(tmp_path, s3, remote_payload):
    settings = s3_settings(tmp_path, s3, s3_secret_key="wrong")
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="remote", key="dir/disk.raw")
    assert info.value.message == f"{FORBIDDEN} s3://remote/dir/disk.raw: SignatureDoesNotMatch"
    assert info.value.kind == "ClientError"
    assert "wrong" not in info.value.message


def test_s3_anonymous_when_no_keys_configured(tmp_path, s3, remote_payload):
    # This server checks identities, so an unsigned request is refused, and says so.
    settings = s3_settings(tmp_path, s3, s3_access_key="", s3_secret_key="")
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="remote", key="dir/disk.raw")
    assert info.value.message.startswith(f"{FORBIDDEN} s3://remote/dir/disk.raw: ")


def test_s3_unreachable_endpoint_is_server_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    settings = Settings(data_dir=tmp_path / "data", s3_endpoint_url=endpoint,
                        s3_access_key="k", s3_secret_key="s")
    with pytest.raises(ImportFailure) as info:
        open_source(settings, bucket="remote", key="disk.raw")
    assert info.value.kind == "ServerError"
    assert info.value.message.startswith(f"cannot reach the S3 endpoint {endpoint} "
                                         "(VMIMPORT_S3_ENDPOINT_URL) to read s3://remote/disk.raw")


def test_local_bucket_directory_wins_over_s3(tmp_path, s3, remote_payload):
    settings = s3_settings(tmp_path, s3)
    (settings.buckets_dir / "remote" / "dir").mkdir(parents=True)
    (settings.buckets_dir / "remote" / "dir" / "disk.raw").write_bytes(b"local copy")
    with open_source(settings, url="s3://remote/dir/disk.raw") as src:
        assert read_all(src) == b"local copy"
    with open_source(settings, url="s3://remote/dir/disk.raw") as src:  # sanity: same again
        assert src.size == len(b"local copy")
    # Without the directory the same URL goes to S3.
    other = s3_settings(tmp_path / "elsewhere", s3)
    with open_source(other, url="s3://remote/dir/disk.raw") as src:
        assert src.size == len(remote_payload)


def test_presigned_http_url(s3, tmp_path):
    """A presigned GET URL of an S3-compatible store, read with ranged GETs."""
    payload = os.urandom(3 * 1024 * 1024 + 77)
    s3.client().put_object(Bucket="remote", Key="presigned.raw", Body=payload)
    url = s3.client().generate_presigned_url(
        "get_object", Params={"Bucket": "remote", "Key": "presigned.raw"}, ExpiresIn=300)
    settings = Settings(data_dir=tmp_path, url_allowed_hosts=["127.0.0.1"], url_allow_http=True)
    with open_source(settings, url=url) as src:
        assert src.size == len(payload)
        assert "Signature" not in src.description
        assert b"".join(src.stream(0, 1024 * 1024)) == payload
        assert src.read_at(len(payload) - 10, 100) == payload[-10:]
    missing = url.replace("presigned.raw", "absent.raw")
    with pytest.raises(ImportFailure, match=r"\[We do not have access|\[Invalid S3 source"):
        open_source(settings, url=missing)  # the signature no longer matches, or 404


SPARSE_SIZE = 8 << 20
# 40 data stretches (4 KiB-aligned) between holes, as SEEK_DATA/SEEK_HOLE report them below.
SPARSE_DATA = [(n * 196 * 1024, n * 196 * 1024 + (n % 5 + 1) * 4096) for n in range(40)]


@pytest.fixture
def sparse_lseek(bucket, monkeypatch) -> list[tuple]:
    """An 8 MiB file whose SEEK_DATA/SEEK_HOLE answers are SPARSE_DATA on any filesystem (some
    report no holes at all); returns the list of lseek calls made on it."""
    path = bucket / "sparse.img"
    with open(path, "wb") as f:
        f.truncate(SPARSE_SIZE)
    calls = []
    real_lseek = os.lseek

    def lseek(fd, pos, how):
        if how not in (os.SEEK_DATA, os.SEEK_HOLE) or os.fstat(fd).st_ino != path.stat().st_ino:
            return real_lseek(fd, pos, how)
        calls.append((pos, how))
        for start, end in SPARSE_DATA:
            if pos < end:
                if how == os.SEEK_HOLE:
                    return pos if pos < start else end
                return max(pos, start)
        if how == os.SEEK_HOLE and pos < SPARSE_SIZE:
            return SPARSE_SIZE
        raise OSError(errno.ENXIO, "no data past this offset")

    monkeypatch.setattr(os, "lseek", lseek)
    return calls


@pytest.mark.parametrize("remembered", [64, 2])
def test_data_ranges_remembered_ahead_answer_like_a_fresh_walk(settings, sparse_lseek,
                                                               monkeypatch, remembered):
    """data_ranges keeps the ranges found ahead of the reader, to spare system calls; whatever
    it remembers or forgets, every question gets the answer a fresh SEEK_DATA walk gives."""
    monkeypatch.setattr(source_mod, "RANGES_AHEAD", remembered)
    whole = SPARSE_DATA
    with open_source(settings, bucket="images", key="sparse.img") as fresh:
        assert list(fresh.data_ranges()) == whole

    def expected(offset, limit):
        return [(max(lo, offset), hi) for lo, hi in whole if hi > offset][:limit]

    offsets = [0, 5000, 5000, 196 * 1024, 196 * 1024 + 4095, 3 << 20, 1 << 20, 0,
               SPARSE_SIZE - 1, 4 << 20, 4 << 20, 7 << 20, 100]
    with open_source(settings, bucket="images", key="sparse.img") as src:
        for n, offset in enumerate(offsets):
            limit = n % 4 + 1  # readers stop early: the generator is left unfinished
            got = []
            for r in src.data_ranges(offset):
                got.append(r)
                if len(got) == limit:
                    break
            assert got == expected(offset, limit), offset
        # two walks at once (one left paused part-way) still answer right
        first, second = src.data_ranges(0), src.data_ranges(2 << 20)
        assert next(first) == whole[0]
        assert list(second) == expected(2 << 20, 99)
        assert list(first) == whole[1:]
        assert list(src.data_ranges(3 << 20)) == expected(3 << 20, 99)
        assert list(src.data_ranges(0)) == whole
    with open_source(settings, bucket="images", key="sparse.img") as src:
        # ... also when the paused one was still handing out what it remembered
        walk = src.data_ranges(0)
        assert [next(walk) for _ in range(3)] == whole[:3]
        paused = src.data_ranges(0)
        assert next(paused) == whole[0]
        assert list(src.data_ranges(6 << 20)) == expected(6 << 20, 99)
        assert list(paused) == whole[1:]

    # What it is for: a reader asking for each next stretch costs one walk of the file, not
    # one per question.
    sparse_lseek.clear()
    with open_source(settings, bucket="images", key="sparse.img") as src:
        for offset in range(0, SPARSE_SIZE, 64 << 10):
            for lo, hi in src.data_ranges(offset):
                if lo >= offset + (64 << 10):
                    break
    assert len(sparse_lseek) <= 2 * len(whole) + 1
