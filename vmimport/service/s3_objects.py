"""Objects of local buckets: the file ``DATA_DIR/buckets/<bucket>/<key>`` holds the bytes (so
imports read what S3 wrote), a ``s3_objects`` row its ETag and stored headers.

A new object is written under the bucket's hidden upload area and renamed into place once
complete and verified, so readers see the old object or the new one, never a part; a failed
write leaves nothing. Every path is opened without following links (``bucket_files``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

from sqlalchemy import delete, select

from vmimport.db.models import S3Object
from vmimport.db.session import Database

from .bucket_files import (UPLOAD_AREA, IsLink, NotAFile, UnsafePath, key_parts, open_dir,
                           open_file, open_parent)
from .errors import S3Error

READ_CHUNK = 1 << 20


@dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str            # quoted, as on the wire
    last_modified: datetime
    content_type: str | None = None
    metadata: dict | None = None


def parts_of(bucket: str, key: str) -> list[str]:
    try:
        return key_parts(key)
    except UnsafePath as bad:
        raise S3Error("InvalidArgument", f"The key cannot be stored by this server: {bad.why}",
                      f"/{bucket}/{key}") from None


def no_such_key(bucket: str, key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", f"/{bucket}/{key}")


def stand_in_etag(st: os.stat_result) -> str:
    """The ETag of a file S3 did not write (put there by hand): not its MD5, which would cost
    a full read, but a value that changes whenever the file does."""
    tag = hashlib.md5(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    return f'"{tag}-1"'


def _info(db: Database, bucket: str, key: str, st: os.stat_result) -> ObjectInfo:
    with db.read() as session:
        row = session.get(S3Object, (bucket, key))
    modified = datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, timezone.utc)
    if row and (row.inode, row.size, row.mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
        return ObjectInfo(key, st.st_size, row.etag, modified, row.content_type,
                          row.user_metadata)
    return ObjectInfo(key, st.st_size, stand_in_etag(st), modified)


def open_object(db: Database, bucket_fd: int, bucket: str, key: str) -> tuple[int, ObjectInfo]:
    """The object's open descriptor (to close) and what S3 says of it."""
    parts = parts_of(bucket, key)
    try:
        fd, st = open_file(bucket_fd, parts)
    except (FileNotFoundError, NotADirectoryError, IsLink, NotAFile):
        raise no_such_key(bucket, key) from None
    return fd, _info(db, bucket, key, st)


def read_range(fd: int, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of an open file, a chunk at a time; closes the file when done."""
    try:
        pos = start
        while pos < end:
            data = os.pread(fd, min(READ_CHUNK, end - pos), pos)
            if not data:
                raise OSError(errno.EIO, "the object shrank while it was being read")
            pos += len(data)
            yield data
    finally:
        os.close(fd)


def upload_area(bucket_fd: int) -> int:
    return open_dir(bucket_fd, UPLOAD_AREA, create=True)


def write_temp(area_fd: int, chunks: Iterable[bytes], name: str | None = None) -> tuple[str, int]:
    """Write ``chunks`` to a new file of the upload area; (its name, its size). Iterating
    ``chunks`` is what reads and checks the request body: if it raises, the file is removed."""
    name = name or f"tmp-{uuid.uuid4().hex}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=area_fd)
    size = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=area_fd)
        raise
    return name, size


def kernel_copy(src_fd: int, out_fd: int, offset: int, length: int) -> None:
    """``length`` bytes of ``src_fd`` from ``offset`` appended to ``out_fd``, in the kernel
    (no byte passes through Python; a reflink where the filesystem can)."""
    while length:
        copied = os.copy_file_range(src_fd, out_fd, min(length, 1 << 30), offset)
        if not copied:
            raise OSError(errno.EIO, "the source shrank while it was being copied")
        offset, length = offset + copied, length - copied


def copy_to_temp(area_fd: int, src_fd: int, offset: int, length: int) -> str:
    """A new temp file of the upload area holding the bytes of ``src_fd`` at ``offset``."""
    name = f"tmp-{uuid.uuid4().hex}"
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o644, dir_fd=area_fd)
    try:
        kernel_copy(src_fd, out, offset, length)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=area_fd)
        raise
    finally:
        os.close(out)
    return name


def publish(db: Database, bucket_fd: int, area_fd: int, temp: str, bucket: str, key: str,
            etag: str, content_type: str | None, metadata: dict | None) -> datetime:
    """Rename a finished temp file onto the key (atomic) and record its ETag; the object's
    LastModified."""
    parts = parts_of(bucket, key)
    try:
        try:
            parent = open_parent(bucket_fd, parts, create=True)
        except (NotADirectoryError, IsLink, FileExistsError):
            raise S3Error("InvalidArgument", "The key cannot be stored by this server: a "
                          "prefix of it is already an object (a file cannot also be a "
                          "directory here)", f"/{bucket}/{key}") from None
        try:
            try:
                os.rename(temp, parts[-1], src_dir_fd=area_fd, dst_dir_fd=parent)
            except (IsADirectoryError, NotADirectoryError):
                raise S3Error("InvalidArgument", "The key cannot be stored by this server: "
                              "other keys exist under it as a prefix (it is a directory "
                              "here)", f"/{bucket}/{key}") from None
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=area_fd)
        raise
    with db.write() as session:
        session.merge(S3Object(bucket=bucket, key=key, etag=etag, size=st.st_size,
                               inode=st.st_ino, mtime_ns=st.st_mtime_ns,
                               content_type=content_type, user_metadata=metadata or None))
    return datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, timezone.utc)


def delete_object(db: Database, bucket_fd: int, bucket: str, key: str) -> None:
    """Remove the key's file (absent is no error, as on S3) and the directories it leaves
    empty."""
    try:
        parts = key_parts(key)
    except UnsafePath:
        return  # no file can have that name
    try:
        parent = open_parent(bucket_fd, parts)
    except (FileNotFoundError, NotADirectoryError, IsLink):
        parent = None
    if parent is not None:
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                os.unlink(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            pass
        finally:
            os.close(parent)
        _remove_empty_dirs(bucket_fd, parts[:-1])
    with db.write() as session:
        session.execute(delete(S3Object).where(S3Object.bucket == bucket, S3Object.key == key))


def _remove_empty_dirs(bucket_fd: int, dirs: list[str]) -> None:
    while dirs:
        try:
            parent = open_parent(bucket_fd, dirs)
        except OSError:
            return
        except IsLink:
            return
        try:
            os.rmdir(dirs[-1], dir_fd=parent)
        except OSError:
            return  # not empty (or gone): stop there
        finally:
            os.close(parent)
        dirs = dirs[:-1]


def keys_under(bucket_fd: int, prefix: str) -> list[tuple[str, os.stat_result]]:
    """Every (key, stat) of the bucket that starts with ``prefix``, in S3's order (UTF-8
    binary, which is code point order). Links and special files are not objects."""
    fixed = prefix.split("/")[:-1]  # directories the prefix names completely
    try:
        start = open_parent(bucket_fd, fixed + [""]) if fixed else os.dup(bucket_fd)
    except (FileNotFoundError, NotADirectoryError, IsLink):
        return []
    found: list[tuple[str, os.stat_result]] = []
    base = "/".join(fixed) + "/" if fixed else ""
    try:
        for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=start):
            rel = "" if dirpath == "." else dirpath[2:] + "/"
            if not rel and not base:
                dirnames[:] = [d for d in dirnames if d != UPLOAD_AREA]
            dirnames[:] = [d for d in dirnames if (base + rel + d + "/").startswith(prefix)
                           or prefix.startswith(base + rel + d + "/")]
            for name in filenames:
                key = base + rel + name
                if not key.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        found.append((key, st))
    finally:
        os.close(start)
    found.sort(key=lambda item: item[0])
    return found


def describe(db: Database, bucket: str, listed: list[tuple[str, os.stat_result]]) -> list[ObjectInfo]:
    """ObjectInfo for a page of ``keys_under`` (one query for the page's rows)."""
    keys = [key for key, _ in listed]
    with db.read() as session:
        rows = {r.key: r for r in session.scalars(
            select(S3Object).where(S3Object.bucket == bucket, S3Object.key.in_(keys)))} if keys else {}
    out = []
    for key, st in listed:
        row = rows.get(key)
        modified = datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, timezone.utc)
        if row and (row.inode, row.size, row.mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
            out.append(ObjectInfo(key, st.st_size, row.etag, modified, row.content_type))
        else:
            out.append(ObjectInfo(key, st.st_size, stand_in_etag(st), modified))
    return out
