"""Crash leftovers of the file block store: files a write had not finished when its process was
killed (``.partial-*`` packs, ``.tmp-*`` manifests). Nothing refers to them, and nothing else
would ever delete them.

Each such file is named after its writer, ``<pid>@<host>`` at the end of its name, and a pack
being written is held under an exclusive ``flock`` by its writer for as long as it is open.
A leftover is abandoned when nobody holds that lock and either its writer was a process of
this host that no longer exists, or it has not changed for a grace period (a writer on another
host, where pids and, over some network filesystems, locks say nothing). A worker reclaims the
first kind when it starts; ``vmimport gc`` both.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import time
from pathlib import Path

from .interface import LeftoverReport

PARTIAL_PREFIX = ".partial-"
TEMP_PREFIX = ".tmp-"
_OWNER = re.compile(r"-(\d+)@([^/]+)$")


def owner_tag() -> str:
    """``-<pid>@<host>``: ends the name of every file a write creates before it is complete
    (taken at each call: a forked process is another writer)."""
    return f"-{os.getpid()}@{socket.gethostname()}"


def hold(fd: int) -> None:
    """Mark an open file as being written: the lock lasts until the descriptor is closed, also
    when the process is killed."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def reclaim(directories: list[Path], grace_seconds: float | None) -> LeftoverReport:
    """Delete the abandoned leftovers in ``directories`` (see the module docstring);
    ``grace_seconds=None``: only those of this host's processes that are gone."""
    removed = freed = 0
    now = time.time()
    for directory in directories:
        try:
            names = [e.name for e in os.scandir(directory)
                     if e.name.startswith((PARTIAL_PREFIX, TEMP_PREFIX))]
        except FileNotFoundError:
            continue
        for name in names:
            size = _remove_if_abandoned(directory / name, now, grace_seconds)
            if size is not None:
                removed += 1
                freed += size
    return LeftoverReport(removed, freed)


def _remove_if_abandoned(path: Path, now: float, grace_seconds: float | None) -> int | None:
    """The bytes freed, or None if ``path`` was kept (in use, or may still be)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None  # finished (renamed) or removed meanwhile
    try:
        try:
            hold(fd)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None  # its writer is alive and writing
            raise
        st = os.fstat(fd)
        gone = writer_gone(path.name)
        old = grace_seconds is not None and now - st.st_mtime > grace_seconds
        if not (gone or old):
            return None
        path.unlink(missing_ok=True)  # under our lock: no writer can be starting on it
        return st.st_blocks * 512
    finally:
        os.close(fd)


def writer_gone(name: str) -> bool:
    """Whether the name says its writer was a process of this host that has exited."""
    owner = _OWNER.search(name)
    if owner is None or owner[2] != socket.gethostname():
        return False
    try:
        os.kill(int(owner[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
