"""Where the image bytes come from: a local bucket directory, an S3-compatible endpoint, or an
``https://`` URL.

A disk container names its object as ``UserBucket{S3Bucket,S3Key}`` or ``Url=s3://bucket/key``;
both resolve the same way, first match wins:

1. ``<data_dir>/buckets/<bucket>`` is a directory: the object is the file
   ``<data_dir>/buckets/<bucket>/<key>`` (the key may contain ``/`` for sub-directories). The
   bucket and key come from users, so no symlink is ever followed (not even one inside the
   bucket, nor a bucket directory that is a link); ``..``, absolute keys and NUL are refused.
1b. The block store is an object store and CreateBucket made the bucket: the object is in that
   store (``store_buckets``), read as in 2.
2. ``VMIMPORT_S3_ENDPOINT_URL`` is set: the object is read from that S3-compatible endpoint with
   ``VMIMPORT_S3_ACCESS_KEY``/``VMIMPORT_S3_SECRET_KEY`` (anonymous if both are empty),
   path-style addressing, region ``VMIMPORT_S3_REGION``, by ranged GETs pinned to the ETag seen
   at open (an object replaced mid-import fails the task instead of mixing two uploads).
3. Otherwise the bucket does not exist and the task fails.

``Url=https://...`` (and ``http://`` where allowed) is read by ``http_source`` from the hosts
in ``url_allowed_hosts``; any other scheme is refused. Failures are ``ImportFailure``s whose text
starts with AWS's wording (``Disk validation failed [...]``).
"""

from __future__ import annotations

import errno
import os
from collections import deque
from pathlib import Path
from typing import Iterator

from vmimport.config import Settings
from vmimport.pipeline.errors import ImportFailure
from vmimport.service import bucket_files, store_buckets
from vmimport.vectored import preadv_all

from .source_base import (DEFAULT_CHUNK, FORBIDDEN, INVALID_LOCATION,  # noqa: F401 (re-exported)
                          UNSUPPORTED_URL, OpenedSource, check_range, describe_object, quote)


def open_source(settings: Settings, *, bucket: str | None = None, key: str | None = None,
                url: str | None = None, db=None) -> OpenedSource:
    """Open the object named by ``bucket``+``key`` or by ``url`` (see the module docstring).
    ``db``: the service's database, where buckets of vmimport's own S3 API are found."""
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
        raise ImportFailure(f"{INVALID_LOCATION} bucket name {quote(bucket)} is not valid")

    bucket_dir = settings.buckets_dir / bucket
    if bucket_dir.is_symlink():
        raise ImportFailure(f"{FORBIDDEN} bucket {quote(bucket)} is a symbolic link on the "
                            "server, which vmimport never follows")
    if bucket_dir.is_dir():
        return LocalSource.open(bucket_dir, bucket, key)
    shared = store_buckets.in_store(db, settings, bucket) if db is not None else None
    if shared is not None:
        from .s3_source import S3Source
        return S3Source(settings, bucket, key, shared=shared)
    if settings.s3_endpoint_url:
        from .s3_source import S3Source  # boto3 costs ~20 MiB: loaded only for S3 sources
        return S3Source(settings, bucket, key)
    raise ImportFailure(
        f"{INVALID_LOCATION} bucket {quote(bucket)} does not exist: no directory {bucket_dir} "
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
        raise ImportFailure(f"{UNSUPPORTED_URL} a {scheme}:// URL names no bucket and key; "
                            "use s3://bucket/key or UserBucket")
    if scheme != "s3":
        raise ImportFailure(f"{INVALID_LOCATION} {quote(scheme)}:// URLs are not supported; "
                            "use s3://bucket/key or UserBucket")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ImportFailure(f"{INVALID_LOCATION} {quote(url)} is not of the form s3://bucket/key")
    return bucket, key


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
        """Every path component opened without following links (``bucket_files``)."""
        desc = describe_object(bucket, key)
        try:
            parts = bucket_files.key_parts(key)
        except bucket_files.UnsafePath as bad:
            raise ImportFailure(f"{INVALID_LOCATION} the key {quote(key)} is not allowed: "
                                f"{bad.why}") from None
        try:
            bucket_fd = bucket_files.open_bucket(bucket_dir.parent, bucket)
            try:
                fd, st = bucket_files.open_file(bucket_fd, parts)
            finally:
                os.close(bucket_fd)
        except bucket_files.IsLink:
            raise ImportFailure(f"{INVALID_LOCATION} {desc}: a symbolic link is in the way, "
                                "and links under buckets/ are never followed") from None
        except (FileNotFoundError, NotADirectoryError):
            raise ImportFailure(f"{INVALID_LOCATION} {desc}: no such key") from None
        except bucket_files.NotAFile as bad:
            what = "is a directory, not an object" if bad.what == "a directory" else \
                "is not a regular file"
            raise ImportFailure(f"{INVALID_LOCATION} {desc}: {what}") from None
        except PermissionError:
            raise ImportFailure(f"{FORBIDDEN} {desc}: permission denied") from None
        except OSError as e:
            raise ImportFailure(f"{INVALID_LOCATION} {desc}: cannot open: {e.strerror}") from None
        return cls(fd, st.st_size, desc)

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
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

    def readv_into(self, offset: int, views: list[memoryview]) -> int:
        """Fill ``views`` one after the other with the bytes from ``offset`` on (no intermediate
        copy), in as few preadv calls as the kernel allows; returns how many were read, fewer
        only at EOF."""
        check_range(offset, sum(len(v) for v in views))
        try:
            return preadv_all(self._require_fd(), views, offset)
        except OSError as e:
            raise ImportFailure(f"reading {self.description} failed: {e}",
                                kind="ServerError") from None

    def stream(self, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        check_range(offset, chunk_size, positive=True)
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
        fd = self._require_fd()
        pos = self._walked_to  # taken now: another walk may move it while this one is paused
        for start, end in list(ahead):
            yield max(start, offset), end
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


