"""Paths under ``DATA_DIR/buckets`` that come from users, opened without following any
symlink: every component is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so
neither a link planted inside a bucket, nor a bucket directory that is itself a link, nor one
swapped in mid-walk, can lead outside. Used by S3 (reads and writes) and by imports alike.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .s3_names import MAX_KEY_BYTES

# The hidden area inside each bucket where uploads are written before they become visible
# (a rename within one filesystem is atomic); no key may start with it.
UPLOAD_AREA = ".vmimport-uploads"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """A key or bucket that cannot name a file here; ``why`` is for the user."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class IsLink(Exception):
    """A path component is a symlink (or not what it must be): never followed."""


def key_parts(key: str) -> list[str]:
    """The path components of an object key, or ``UnsafePath`` for a key with no file."""
    if not key:
        raise UnsafePath("the key is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UnsafePath(f"the key is longer than {MAX_KEY_BYTES} bytes")
    if "\0" in key:
        raise UnsafePath("the key contains a NUL character")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath("a key stored as a file cannot have empty, '.' or '..' path segments "
                         "(a leading, trailing or doubled '/')")
    if parts[0] == UPLOAD_AREA:
        raise UnsafePath(f"keys under {UPLOAD_AREA}/ are reserved for uploads in progress")
    if any(len(p.encode()) > 255 for p in parts):
        raise UnsafePath("a segment of the key between '/' is longer than 255 bytes")
    return parts


def open_dir(parent_fd: int, name: str, create: bool = False) -> int:
    """The directory ``name`` in ``parent_fd``, never through a link (``IsLink``)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        return open_dir(parent_fd, name)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            _raise_link_or(parent_fd, name, NotADirectoryError(errno.ENOTDIR, name))
        raise


def _raise_link_or(parent_fd: int, name: str, other: OSError):
    """IsLink when ``name`` is a link, else ``other`` (what the failed open meant)."""
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        raise IsLink(name) from None
    raise other from None


class NotAFile(Exception):
    """The key names a directory or a special file (FIFO, device...), never opened for data."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def open_buckets_root(buckets_dir: Path) -> int:
    """``DATA_DIR/buckets`` itself is the operator's: opened normally (made if missing)."""
    buckets_dir.mkdir(parents=True, exist_ok=True)
    return os.open(buckets_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_bucket(buckets_dir: Path, bucket: str) -> int:
    """The bucket directory's descriptor; FileNotFoundError if none, IsLink if a link."""
    if not bucket or "/" in bucket or bucket in (".", "..") or "\0" in bucket:
        raise FileNotFoundError(bucket)
    root = open_buckets_root(buckets_dir)
    try:
        return open_dir(root, bucket)
    finally:
        os.close(root)


def bucket_exists(buckets_dir: Path, bucket: str) -> bool:
    """A real directory (not a link) of that name exists."""
    try:
        os.close(open_bucket(buckets_dir, bucket))
        return True
    except (FileNotFoundError, IsLink):
        return False


def open_parent(bucket_fd: int, parts: list[str], create: bool = False) -> int:
    """The directory holding the key's last part (a new descriptor to close)."""
    fd = os.dup(bucket_fd)
    try:
        for name in parts[:-1]:
            child = open_dir(fd, name, create)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file(bucket_fd: int, parts: list[str]) -> tuple[int, os.stat_result]:
    """A regular file of the bucket opened for reading, and its stat; FileNotFoundError or
    NotADirectoryError when the key names nothing, NotAFile for a directory or special file,
    IsLink when a link is met on the way."""
    parent = open_parent(bucket_fd, parts)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _raise_link_or(parent, parts[-1], exc)
        raise
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotAFile("a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
    return fd, st
