"""Where an export's bytes go: a local bucket's directory or the configured S3 store, written
front to back and made visible only when complete (``commit``); ``abort`` leaves nothing.

- ``LocalBucketSink``: a hidden partial file inside the bucket directory, renamed onto the key
  at the end (atomic); zeros the writer skips, and 64 KiB stretches of zeros it writes, become
  holes.
- ``S3MultipartSink``: a multipart upload of parts sized for the disk (at most 10,000 parts),
  uploaded by two threads while the writer goes on; memory is a few parts. Also for a bucket
  of vmimport's own S3 API kept in the block store's object store (``store_buckets``).
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vmimport.blockstore import leftovers
from vmimport.blockstore.interface import LeftoverReport
from vmimport.config import Settings
from vmimport.service import store_buckets
from vmimport.sparse_writes import nonzero_parts, write_segments

from .errors import ImportFailure

PARTIAL_DIR = ".vmimport-partial"  # inside a bucket directory: hidden exports being written
MIN_PART = 16 * 1024 * 1024
MAX_PARTS = 10_000
_ZEROS = bytes(1 << 20)


def _bad_key(bucket: str, key: str) -> ImportFailure:
    return ImportFailure(f"the export's key {key!r} cannot be written in bucket {bucket!r}: it "
                         "must name a file inside the bucket")


class LocalBucketSink:
    def __init__(self, bucket_dir: Path, bucket: str, key: str):
        parts = key.split("/")
        if key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts) or \
                parts[0] == PARTIAL_DIR:
            raise _bad_key(bucket, key)
        if bucket_dir.is_symlink():
            raise ImportFailure(f"the bucket {bucket!r} is a symbolic link; vmimport never "
                                "follows one")
        self.root = bucket_dir
        self.target = bucket_dir / key
        # Every directory on the way must be a real one inside the bucket.
        here = bucket_dir
        for part in parts[:-1]:
            here = here / part
            if here.is_symlink() or (here.exists() and not here.is_dir()):
                raise _bad_key(bucket, key)
        partial_dir = bucket_dir / PARTIAL_DIR
        partial_dir.mkdir(exist_ok=True)
        # Named and locked as the block store's partial packs are, so that a killed worker's
        # leftover is reclaimed the same way (``reclaim_partial_exports``).
        self.partial = partial_dir / (leftovers.PARTIAL_PREFIX + uuid.uuid4().hex +
                                      leftovers.owner_tag())
        self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC |
                          os.O_NOFOLLOW, 0o644)
        leftovers.hold(self.fd)
        self._position = 0

    @property
    def position(self) -> int:
        return self._position

    def write(self, data) -> None:
        # All-zero 64 KiB stretches stay holes, as qemu-img leaves them: the bench disk's RAW
        # export puts 1047 MiB into the page cache instead of 1216. Stretches are counted from
        # the start of ``data`` (a guest block: VHD's sit 512 bytes off the file's grid).
        view = memoryview(data).cast("B")
        write_segments(self.fd, [(self._position + at, part)
                                 for at, part in nonzero_parts(0, view)])
        self._position += len(view)

    def skip(self, length: int) -> None:
        self._position += length

    def commit(self) -> None:
        os.ftruncate(self.fd, self._position)  # a hole at the end still counts
        os.close(self.fd)
        self.fd = None
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if self.target.is_symlink() or self.target.is_dir():
            self.abort()
            raise _bad_key(self.root.name, str(self.target.relative_to(self.root)))
        os.rename(self.partial, self.target)

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.partial.unlink(missing_ok=True)


class S3MultipartSink:
    def __init__(self, settings: Settings, bucket: str, key: str, expected_size: int,
                 shared=None):
        if shared is None:
            from .s3_client import s3_client  # boto3 costs ~20 MiB: loaded only for S3 sinks

            self.client = s3_client(settings)
            self.bucket, self.key = bucket, key
        else:  # the process's own client of the block store's object store
            self.client, self.bucket, self.key = shared.client, shared.bucket, \
                shared.key(bucket, key)
        self.part_size = max(MIN_PART, -(-int(expected_size * 1.01 + (1 << 20)) // MAX_PARTS))
        self._buffer = bytearray()
        self._position = 0
        self._parts: list = []
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="export-upload")
        self.upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key)["UploadId"]

    @property
    def position(self) -> int:
        return self._position

    def write(self, data) -> None:
        self._buffer += data
        self._position += len(data)
        while len(self._buffer) >= self.part_size:
            self._send(bytes(self._buffer[:self.part_size]))
            del self._buffer[:self.part_size]

    def skip(self, length: int) -> None:
        while length:
            piece = min(length, len(_ZEROS))
            self.write(_ZEROS[:piece])
            length -= piece

    def _send(self, data: bytes) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise ImportFailure("the export does not fit in 10,000 parts", "ServerError")
        self._parts.append(self._pool.submit(self._upload, number, data))
        # At most two parts in flight and two waiting: memory stays a few parts. Parts finish
        # roughly in order, so waiting for the oldest of the last three is enough (a scan of
        # every part made this quadratic in their number, up to 10,000).
        if len(self._parts) > 2:
            self._parts[-3].result()

    def _upload(self, number: int, data: bytes) -> dict:
        answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, PartNumber=number,
                                         UploadId=self.upload_id, Body=data)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def commit(self) -> None:
        if self._buffer or not self._parts:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        parts = [p.result() for p in self._parts]
        self._pool.shutdown()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key,
                                              UploadId=self.upload_id,
                                              MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                               UploadId=self.upload_id)
        except Exception:  # noqa: BLE001 - best effort: the store expires abandoned uploads
            pass


def reclaim_partial_exports(settings: Settings, grace_seconds: float | None) -> LeftoverReport:
    """Exports a killed worker left half-written in local buckets (see ``leftovers.reclaim``:
    with ``grace_seconds=None`` only those of this host's processes that are gone)."""
    try:
        buckets = [entry for entry in os.scandir(settings.buckets_dir)
                   if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return LeftoverReport(0, 0)
    return leftovers.reclaim([Path(b.path) / PARTIAL_DIR for b in buckets], grace_seconds)


def open_sink(settings: Settings, bucket: str, key: str, expected_size: int, db=None):
    """The bucket's directory when it exists here, else the block store's object store when
    the bucket is one of vmimport's S3 API (found in ``db``), else the configured S3 store."""
    bucket_dir = settings.buckets_dir / bucket
    if bucket_dir.is_dir() or bucket_dir.is_symlink():
        return LocalBucketSink(bucket_dir, bucket, key)
    shared = store_buckets.in_store(db, settings, bucket) if db is not None else None
    if shared is not None:
        return S3MultipartSink(settings, bucket, key, expected_size, shared=shared)
    if settings.s3_endpoint_url:
        return S3MultipartSink(settings, bucket, key, expected_size)
    raise ImportFailure(f"the export bucket {bucket!r} does not exist: no directory "
                        f"{bucket_dir} and no S3 endpoint configured (VMIMPORT_S3_ENDPOINT_URL)")
