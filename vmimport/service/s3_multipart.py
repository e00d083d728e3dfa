"""Multipart uploads of local buckets: each upload is a directory of the bucket's hidden upload
area, ``<upload-id>/``, holding ``upload.json`` (key, start, headers) and one file per part,
``part.<number>.<md5 hex>``; completing concatenates the chosen parts into a temp file that is
renamed onto the key, then removes the upload. Aborting removes it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from vmimport.db.session import Database

from . import s3_objects
from .bucket_files import UPLOAD_AREA, IsLink, open_bucket, open_dir
from .errors import S3Error

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
_UPLOAD_ID = re.compile(r"[0-9a-f]{48}\Z")
_PART_FILE = re.compile(r"part\.(\d{5})\.([0-9a-f]{32})\Z")


@dataclass
class Part:
    number: int
    etag: str           # quoted
    size: int
    last_modified: datetime
    name: str


@dataclass
class Upload:
    upload_id: str
    key: str
    initiated: datetime
    content_type: str | None
    metadata: dict | None


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be "
                   "invalid, or the upload may have been aborted or completed.", upload_id[:64])


def create(bucket_fd: int, bucket: str, key: str, content_type: str | None,
           metadata: dict | None) -> str:
    s3_objects.parts_of(bucket, key)  # refuse a key that cannot be stored now, not at the end
    upload_id = secrets.token_hex(24)
    area = s3_objects.upload_area(bucket_fd)
    try:
        os.mkdir(upload_id, 0o755, dir_fd=area)
        fd = open_dir(area, upload_id)
        try:
            record = {"key": key, "initiated": datetime.now(timezone.utc).isoformat(),
                      "content_type": content_type, "metadata": metadata or None}
            name, _ = s3_objects.write_temp(fd, [json.dumps(record).encode()])
            os.rename(name, "upload.json", src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            os.close(fd)
    finally:
        os.close(area)
    return upload_id


@contextlib.contextmanager
def _open_upload(bucket_fd: int, upload_id: str, key: str | None):
    """(area fd, upload dir fd, Upload) of an upload of ``key``; NoSuchUpload otherwise."""
    if not _UPLOAD_ID.match(upload_id or ""):
        raise no_such_upload(upload_id or "")
    area = s3_objects.upload_area(bucket_fd)
    try:
        try:
            fd = open_dir(area, upload_id)
        except (FileNotFoundError, IsLink):
            raise no_such_upload(upload_id) from None
        try:
            upload = _read_record(fd, upload_id)
            if upload is None or (key is not None and upload.key != key):
                raise no_such_upload(upload_id)
            yield area, fd, upload
        finally:
            os.close(fd)
    finally:
        os.close(area)


def _read_record(fd: int, upload_id: str) -> Upload | None:
    try:
        rfd = os.open("upload.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        with os.fdopen(rfd, "rb") as f:
            record = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None
    return Upload(upload_id, record["key"], datetime.fromisoformat(record["initiated"]),
                  record.get("content_type"), record.get("metadata"))


def upload_part(bucket_fd: int, upload_id: str, key: str, number: int, body,
                chunks: Iterable[bytes]) -> str:
    """Store one part; its quoted ETag. ``body.md5_hex`` is read once ``chunks`` is done."""
    check_part_number(number)
    with _open_upload(bucket_fd, upload_id, key) as (_, fd, _upload):
        temp, _ = s3_objects.write_temp(fd, chunks)
        name = f"part.{number:05d}.{body.md5_hex}"
        os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        mine = os.stat(name, dir_fd=fd).st_mtime_ns
        for part in _parts(fd):  # an earlier upload of the same part number is replaced
            if part.number == number and part.name != name:
                with contextlib.suppress(OSError):
                    if os.stat(part.name, dir_fd=fd).st_mtime_ns <= mine:
                        os.unlink(part.name, dir_fd=fd)
    return f'"{body.md5_hex}"'


def check_part_number(number: int) -> None:
    if not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and "
                      f"{MAX_PART_NUMBER}, inclusive")


def _parts(fd: int) -> list[Part]:
    newest: dict[int, Part] = {}
    for name in os.listdir(fd):
        m = _PART_FILE.match(name)
        if not m:
            continue
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            part = Part(int(m.group(1)), f'"{m.group(2)}"', st.st_size,
                        datetime.fromtimestamp(st.st_mtime_ns // 10**9, timezone.utc), name)
            if part.number not in newest or st.st_mtime >= newest[part.number].last_modified.timestamp():
                newest[part.number] = part
    return [newest[n] for n in sorted(newest)]


def list_parts(bucket_fd: int, upload_id: str, key: str) -> tuple[Upload, list[Part]]:
    with _open_upload(bucket_fd, upload_id, key) as (_, fd, upload):
        return upload, _parts(fd)


def complete(db: Database, bucket_fd: int, bucket: str, key: str, upload_id: str,
             requested: list[dict]) -> str:
    """Join the requested parts into the object; its quoted md5-of-md5s-N ETag."""
    with _open_upload(bucket_fd, upload_id, key) as (area, fd, upload):
        chosen = choose_parts({p.number: p for p in _parts(fd)}, requested, upload_id)
        temp = _concatenate(area, fd, chosen)
        digest = hashlib.md5(b"".join(bytes.fromhex(p.etag.strip('"')) for p in chosen))
        etag = f'"{digest.hexdigest()}-{len(chosen)}"'
        s3_objects.publish(db, bucket_fd, area, temp, bucket, key, etag, upload.content_type,
                           upload.metadata)
        _remove(area, upload_id)
    return etag


def choose_parts(stored: dict[int, Part], requested: list[dict], upload_id: str) -> list[Part]:
    """The stored parts CompleteMultipartUpload names, checked as S3 checks them: in ascending
    order, each there with its ETag, every one but the last at least 5 MiB."""
    if not requested:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema: no Part given")
    chosen: list[Part] = []
    for n, item in enumerate(requested):
        number, etag = item.get("PartNumber"), (item.get("ETag") or "").strip('"')
        if n and number is not None and number <= requested[n - 1].get("PartNumber", 0):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending "
                          "order. Parts must be ordered by part number.", upload_id)
        part = stored.get(number)
        if part is None or part.etag.strip('"') != etag.lower():
            raise S3Error("InvalidPart", f"One or more of the specified parts could not be "
                          f"found (part {number}). The part may not have been uploaded, or "
                          "the specified entity tag may not match the part's entity tag.",
                          upload_id)
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_SIZE:
            raise S3Error("EntityTooSmall", f"Your proposed upload is smaller than the "
                          f"minimum allowed object size: part {part.number} has "
                          f"{part.size} bytes, and every part but the last needs "
                          f"{MIN_PART_SIZE}", upload_id)
    return chosen


def _concatenate(area: int, fd: int, parts: list[Part]) -> str:
    name = f"tmp-{secrets.token_hex(16)}"
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=area)
    try:
        for part in parts:
            src = os.open(part.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                s3_objects.kernel_copy(src, out, 0, part.size)
            finally:
                os.close(src)
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=area)
        raise
    os.close(out)
    return name


def _remove(area: int, upload_id: str) -> None:
    fd = open_dir(area, upload_id)
    try:
        for name in os.listdir(fd):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(upload_id, dir_fd=area)


def abort(bucket_fd: int, upload_id: str, key: str) -> None:
    with _open_upload(bucket_fd, upload_id, key) as (area, _fd, _upload):
        _remove(area, upload_id)


def list_uploads(bucket_fd: int, prefix: str = "") -> list[Upload]:
    area = s3_objects.upload_area(bucket_fd)
    try:
        uploads = []
        for name in os.listdir(area):
            if not _UPLOAD_ID.match(name):
                continue
            with contextlib.suppress(OSError, IsLink):
                fd = open_dir(area, name)
                try:
                    upload = _read_record(fd, name)
                finally:
                    os.close(fd)
                if upload and upload.key.startswith(prefix):
                    uploads.append(upload)
        return sorted(uploads, key=lambda u: (u.key, u.initiated))
    finally:
        os.close(area)


def remove_abandoned(buckets_dir, older_than_seconds: float) -> tuple[int, int]:
    """Remove the multipart uploads and unfinished PUT temp files of every local bucket that
    nothing has touched for ``older_than_seconds`` (``vmimport gc``); (how many, bytes)."""
    removed = freed = 0
    cutoff = time.time() - older_than_seconds
    names = os.listdir(buckets_dir) if os.path.isdir(buckets_dir) else []
    for bucket in names:
        try:
            bucket_fd = open_bucket(buckets_dir, bucket)
        except (OSError, IsLink):
            continue  # a link or a file: not a bucket
        try:
            area = open_dir(bucket_fd, UPLOAD_AREA)
        except (OSError, IsLink):
            os.close(bucket_fd)
            continue
        try:
            for name in os.listdir(area):
                st = os.stat(name, dir_fd=area, follow_symlinks=False)
                if _UPLOAD_ID.match(name) and stat.S_ISDIR(st.st_mode):
                    newest, size = _age_and_size(area, name, st)
                    if newest < cutoff:
                        _remove(area, name)
                        removed, freed = removed + 1, freed + size
                elif name.startswith("tmp-") and stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    os.unlink(name, dir_fd=area)
                    removed, freed = removed + 1, freed + st.st_size
        finally:
            os.close(area)
            os.close(bucket_fd)
    return removed, freed


def _age_and_size(area: int, upload_id: str, st: os.stat_result) -> tuple[float, int]:
    """The last change to an upload (its directory or any part) and its bytes."""
    fd = open_dir(area, upload_id)
    try:
        newest, size = st.st_mtime, 0
        for name in os.listdir(fd):
            part = os.stat(name, dir_fd=fd, follow_symlinks=False)
            newest, size = max(newest, part.st_mtime), size + part.st_size
        return newest, size
    finally:
        os.close(fd)
