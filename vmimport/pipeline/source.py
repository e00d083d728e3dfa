"""Where the image bytes come from: a local bucket directory or an S3-compatible endpoint.

A disk container names its object as ``UserBucket{S3Bucket,S3Key}`` or ``Url=s3://bucket/key``;
both resolve the same way, first match wins:

1. ``<data_dir>/buckets/<bucket>`` is a directory: the object is the file
   ``<data_dir>/buckets/<bucket>/<key>`` (the key may contain ``/`` for sub-directories). The
   bucket and key come from users, so the resolved path (symlinks followed) must stay inside
   the bucket directory; ``..``, absolute keys, NUL and escaping symlinks are refused.
2. ``VMIMPORT_S3_ENDPOINT_URL`` is set: the object is read from that S3-compatible endpoint with
   ``VMIMPORT_S3_ACCESS_KEY``/``VMIMPORT_S3_SECRET_KEY`` (anonymous if both are empty),
   path-style addressing, region ``VMIMPORT_S3_REGION``, by ranged GETs pinned to the ETag seen
   at open (an object replaced mid-import fails the task instead of mixing two uploads).
3. Otherwise the bucket does not exist and the task fails.

``https://`` and ``http://`` URLs are not supported yet; any other scheme is refused. Failures
are ``ImportFailure``s whose text starts with AWS's wording (``Disk validation failed [...]``).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from contextlib import closing
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import urlsplit

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError,
                                 EndpointConnectionError)

from vmimport.config import Settings
from vmimport.pipeline.errors import ImportFailure

INVALID_LOCATION = "Disk validation failed [Invalid S3 source location]"
FORBIDDEN = ("Disk validation failed [We do not have access to the given resource. "
             "Reason 403 Forbidden]")
UNSUPPORTED_URL = "Disk validation failed [Unsupported URL]"

DEFAULT_CHUNK = 8 << 20
RANGE_ATTEMPTS = 4  # per ranged GET whose body broke off; connection setup is retried by botocore


class Source(Protocol):
    description: str  # "s3://bucket/key": for messages, never credentials
    size: int

    def read_at(self, offset: int, length: int) -> bytes: ...  # short only at EOF

    def stream(self, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]: ...

    def close(self) -> None: ...


def open_source(settings: Settings, *, bucket: str | None = None, key: str | None = None,
                url: str | None = None) -> Source:
    """Open the object named by ``bucket``+``key`` or by ``url`` (see the module docstring)."""
    if url is not None:
        if bucket is not None or key is not None:
            raise ValueError("give either url or bucket and key, not both")
        if url.split("://", 1)[0].lower() in ("http", "https"):
            from .http_source import HttpSource
            return HttpSource(settings, url)
        bucket, key = parse_s3_url(url)
    elif bucket is None and key is None:
        raise ValueError("give url or bucket and key")
    if not bucket or not key:
        raise ImportFailure(f"{INVALID_LOCATION} UserBucket needs both S3Bucket and S3Key")
    if bucket in (".", "..") or any(c in bucket for c in "/\\\0") or not bucket.isprintable():
        raise ImportFailure(f"{INVALID_LOCATION} bucket name {_quote(bucket)} is not valid")

    bucket_dir = settings.buckets_dir / bucket
    if bucket_dir.is_dir():
        return LocalSource.open(bucket_dir, bucket, key)
    if settings.s3_endpoint_url:
        return S3Source(settings, bucket, key)
    raise ImportFailure(
        f"{INVALID_LOCATION} bucket {_quote(bucket)} does not exist: no directory {bucket_dir} "
        "and no S3 endpoint configured (VMIMPORT_S3_ENDPOINT_URL)")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). The key is taken verbatim (no ?query or #fragment
    parsing: S3 keys may contain those characters)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ImportFailure(f"{INVALID_LOCATION} the URL has no scheme; "
                            "use s3://bucket/key or UserBucket")
    scheme = scheme.lower()
    if scheme in ("https", "http"):
        # Never echo these: presigned URLs carry signatures.
        raise ImportFailure(f"{UNSUPPORTED_URL} {scheme}:// URLs are not supported yet by this "
                            "server; use s3://bucket/key or UserBucket")
    if scheme != "s3":
        raise ImportFailure(f"{INVALID_LOCATION} {_quote(scheme)}:// URLs are not supported; "
                            "use s3://bucket/key or UserBucket")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ImportFailure(f"{INVALID_LOCATION} {_quote(url)} is not of the form s3://bucket/key")
    return bucket, key


def _quote(text: str) -> str:
    """'text' with control characters (NUL...) shown escaped, so messages stay one clean line."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + "'"


def _describe(bucket: str, key: str) -> str:
    return "s3://" + _quote(f"{bucket}/{key}")[1:-1]


RANGES_AHEAD = 64  # data ranges a LocalSource remembers ahead of its reader


class LocalSource:
    """A regular file under ``buckets_dir/<bucket>``, read with pread (no shared file offset)."""

    def __init__(self, fd: int, size: int, description: str):
        self._fd: int | None = fd
        self.size = size
        self.description = description
        # data_ranges' memory: every data range in [walked_from, walked_to), the stretch of the
        # file walked last (readers ask for the next stretch again and again: see data_ranges).
        self._ranges_ahead: deque[tuple[int, int]] = deque()
        self._walked_from = self._walked_to = 0

    @classmethod
    def open(cls, bucket_dir: Path, bucket: str, key: str) -> "LocalSource":
        desc = _describe(bucket, key)
        escape = ImportFailure(f"{INVALID_LOCATION} the key {_quote(key)} is not allowed: it must "
                               f"name a file inside bucket {_quote(bucket)}")
        if "\0" in key or key.startswith("/") or ".." in key.split("/"):
            raise escape
        root = bucket_dir.resolve(strict=True)
        target = (root / key).resolve()  # follows every symlink, so the check below sees the truth
        if target != root and not target.is_relative_to(root):
            raise escape
        try:
            st = os.stat(target)
            if stat.S_ISDIR(st.st_mode):
                raise ImportFailure(f"{INVALID_LOCATION} {desc}: is a directory, not an object")
            if not stat.S_ISREG(st.st_mode):
                raise ImportFailure(f"{INVALID_LOCATION} {desc}: is not a regular file")
            # target has no symlinks left; O_NOFOLLOW catches one swapped in since, O_NONBLOCK
            # keeps a FIFO swapped in from blocking the worker.
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise ImportFailure(f"{INVALID_LOCATION} {desc}: no such key") from None
        except PermissionError:
            raise ImportFailure(f"{FORBIDDEN} {desc}: permission denied on {target}") from None
        except OSError as e:  # ELOOP from O_NOFOLLOW: the path changed under us
            raise ImportFailure(f"{INVALID_LOCATION} {desc}: cannot open: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not _fd_inside(fd, root):
                raise escape
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, st.st_size, desc)

    def read_at(self, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        end = min(offset + length, self.size)
        parts, pos = [], offset
        while pos < end:
            try:
                data = os.pread(self._require_fd(), end - pos, pos)
            except OSError as e:
                raise ImportFailure(f"reading {self.description} failed: {e}",
                                    kind="ServerError") from None
            if not data:
                break  # the file shrank; stream() turns that into an error
            parts.append(data)
            pos += len(data)
        return b"".join(parts)

    def read_into(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` with the bytes at ``offset`` (no intermediate copy); returns how many
        were read, fewer only at EOF."""
        _check_range(offset, len(view))
        done = 0
        while done < len(view):
            try:
                n = os.preadv(self._require_fd(), [view[done:]], offset + done)
            except OSError as e:
                raise ImportFailure(f"reading {self.description} failed: {e}",
                                    kind="ServerError") from None
            if not n:
                break
            done += n
        return done

    def stream(self, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        _check_range(offset, chunk_size, positive=True)
        pos = offset
        while pos < self.size:
            want = min(chunk_size, self.size - pos)
            data = self.read_at(pos, want)
            if len(data) != want:
                raise ImportFailure(f"{self.description} shrank while it was being read "
                                    f"(expected {self.size} bytes)")
            yield data
            pos += want

    def data_ranges(self, offset: int = 0) -> Iterator[tuple[int, int]]:
        """(start, end) of the ranges that hold data in a sparse file (SEEK_DATA/SEEK_HOLE),
        from ``offset`` on; holes read as zeros, so a reader may skip them. One range over the
        whole file where the filesystem cannot tell. A file cut short since it was opened is an
        error, not a hole (past its new end, SEEK_DATA finds no data either).

        Readers ask once per run of clusters or blocks, each time a little further on. The
        ranges already found ahead of the last question answer the next one without system
        calls: an lseek releases the GIL and waits to take it back behind the block writer's
        threads, which made the calls a fifth of a busy import's time."""
        ahead = self._ranges_ahead
        if not self._walked_from <= offset <= self._walked_to:
            ahead.clear()  # a step back, or a jump past what was walked: walk from here
            self._walked_to = offset
        while ahead and ahead[0][1] <= offset:
            ahead.popleft()
        self._walked_from = offset
        for start, end in list(ahead):
            yield max(start, offset), end
        fd = self._require_fd()
        pos = self._walked_to
        while pos < self.size:
            # Another walk ran while this one was paused: go on, but leave the memory to it.
            mine = self._walked_to == pos
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = min(os.lseek(fd, start, os.SEEK_HOLE), self.size)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after pos
                    self._check_not_shrunk()
                    start = end = self.size
                else:  # SEEK_DATA unsupported: everything may be data
                    start, end = pos, self.size
            if start >= self.size:
                if mine:
                    self._walked_to = self.size
                return
            if mine:
                ahead.append((start, end))
                if len(ahead) > RANGES_AHEAD:  # one long walk (a raw image): forget the past
                    self._walked_from = ahead.popleft()[1]
                self._walked_to = end
            pos = end
            yield start, end

    def _check_not_shrunk(self) -> None:
        if os.fstat(self._require_fd()).st_size < self.size:
            raise ImportFailure(f"{self.description} shrank while it was being read "
                                f"(expected {self.size} bytes)")

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.description} is closed")
        return self._fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fd_inside(fd: int, root: Path) -> bool:
    """Where the kernel says the open file is (defeats a directory swapped for a symlink
    between resolve() and open()). Without /proc, the resolve() check is what we have."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return Path(real).is_relative_to(root)


def _check_range(offset: int, length: int, positive: bool = False) -> None:
    if offset < 0 or length < 0 or (positive and length == 0):
        raise ValueError(f"bad range: offset={offset} length={length}")


class S3Source:
    """An object on the configured S3-compatible endpoint, read by ranged GETs.

    One boto3 client (own session: creating clients from the default session is not
    thread-safe) per source; fine for one reader thread.
    """

    def __init__(self, settings: Settings, bucket: str, key: str):
        self.bucket, self.key = bucket, key
        self.description = _describe(bucket, key)
        self.endpoint = _without_userinfo(settings.s3_endpoint_url)
        anonymous = not (settings.s3_access_key or settings.s3_secret_key)
        config = Config(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=60,
                        retries={"max_attempts": 3, "mode": "standard"},
                        signature_version=UNSIGNED if anonymous else None)
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            # Placeholders when anonymous: unused (UNSIGNED), and they stop botocore from
            # hunting for credentials (environment, ~/.aws, instance metadata).
            aws_access_key_id="anonymous" if anonymous else settings.s3_access_key,
            aws_secret_access_key="anonymous" if anonymous else settings.s3_secret_key,
            config=config)
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            self.close()
            raise self._failure(self._with_error_code(e)) from None
        except BotoCoreError as e:
            self.close()
            raise self._unreachable(e) from None
        self.size: int = head["ContentLength"]
        self.etag: str | None = head.get("ETag")

    def read_at(self, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        if length == 0 or offset >= self.size:
            return b""
        return self._get_range(offset, min(offset + length, self.size) - 1)

    def stream(self, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        # One GET per chunk: a dropped connection costs one chunk and resumes at its offset.
        _check_range(offset, chunk_size, positive=True)
        pos = offset
        while pos < self.size:
            end = min(pos + chunk_size, self.size) - 1
            yield self._get_range(pos, end)
            pos = end + 1

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get_range(self, first: int, last: int) -> bytes:
        want = last - first + 1
        extra = {"IfMatch": self.etag} if self.etag else {}
        problem: object = None
        for attempt in range(RANGE_ATTEMPTS):
            if attempt:
                time.sleep(min(0.25 * 2 ** attempt, 2.0))
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=self.key,
                                               Range=f"bytes={first}-{last}", **extra)
                with closing(resp["Body"]) as body:
                    data = body.read()
            except ClientError as e:  # an answer, not a broken transfer: retrying won't help
                raise self._failure(e) from None
            except (BotoCoreError, OSError) as e:  # connection dropped, timeout, short body
                problem = e
                continue
            if len(data) == want:
                return data
            problem = f"got {len(data)} of {want} bytes"
        raise ImportFailure(f"reading bytes {first}-{last} of {self.description} from the S3 "
                            f"endpoint {self.endpoint} failed {RANGE_ATTEMPTS} times: {problem}",
                            kind="ServerError")

    def _with_error_code(self, err: ClientError) -> ClientError:
        """HEAD answers carry no body, so no S3 error code ("404", "403"); a 1-byte GET says
        whether it is NoSuchKey or NoSuchBucket, SignatureDoesNotMatch or AccessDenied."""
        if not err.response.get("Error", {}).get("Code", "").isdigit():
            return err
        try:
            self._client.get_object(Bucket=self.bucket, Key=self.key, Range="bytes=0-0")
        except ClientError as detailed:
            if not detailed.response.get("Error", {}).get("Code", "").isdigit():
                return detailed
        except BotoCoreError:
            pass
        return err

    def _failure(self, err: ClientError) -> ImportFailure:
        error = err.response.get("Error", {})
        code = error.get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        desc = self.description
        if code == "NoSuchBucket":
            return ImportFailure(f"{INVALID_LOCATION} {desc}: no such bucket")
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return ImportFailure(f"{INVALID_LOCATION} {desc}: no such key")
        if status == 403:
            return ImportFailure(f"{FORBIDDEN} {desc}: {code or 'Forbidden'}")
        if code in ("PreconditionFailed", "InvalidRange") or status in (412, 416):
            return ImportFailure(f"{desc} changed while it was being read (ETag {self.etag} and "
                                 f"{self.size} bytes at the start); upload it again and retry")
        detail = f"{code}: {error.get('Message', '')}".rstrip(": ")
        if status >= 500:
            return ImportFailure(f"the S3 endpoint {self.endpoint} failed reading {desc}: "
                                 f"{detail}", kind="ServerError")
        return ImportFailure(f"{INVALID_LOCATION} {desc}: {detail} (HTTP {status})")

    def _unreachable(self, err: BotoCoreError) -> ImportFailure:
        what = ("cannot reach" if isinstance(err, (EndpointConnectionError, ConnectTimeoutError))
                else "error talking to")
        return ImportFailure(f"{what} the S3 endpoint {self.endpoint} "
                             f"(VMIMPORT_S3_ENDPOINT_URL) to read {self.description}: {err}",
                             kind="ServerError")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
