"""Bounds for inspecting untrusted disks: a deadline and a read budget enforced on every read.

Every byte the dissect parsers see comes through :class:`BoundedReader`, so a crafted filesystem
that makes a parser loop (directory cycles, self-referencing extents, absurd sizes) runs into the
deadline or the byte budget on its next read instead of stalling the import or exhausting memory.
"""

from __future__ import annotations

import time
from typing import BinaryIO
from vmimport.seekable import SeekableView

MAX_SINGLE_READ = 64 * 1024 * 1024  # no legitimate structure we parse needs more at once
MAX_TOTAL_READ = 1024 * 1024 * 1024  # per inspection


class InspectionLimit(Exception):
    """The inspection hit its deadline or a size/count limit; what was found so far still stands."""


class Budget:
    def __init__(self, deadline_seconds: float, max_total_read: int = MAX_TOTAL_READ):
        self.started = time.monotonic()
        self.deadline = self.started + deadline_seconds
        self.bytes_read = 0
        self.max_total_read = max_total_read

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise InspectionLimit(f"inspection stopped at its deadline ({self.elapsed():.1f} s)")

    def charge(self, nbytes: int) -> None:
        if nbytes > MAX_SINGLE_READ:
            raise InspectionLimit(f"a filesystem structure asked for a {nbytes}-byte read (limit {MAX_SINGLE_READ})")
        self.bytes_read += nbytes
        if self.bytes_read > self.max_total_read:
            raise InspectionLimit(f"inspection read more than {self.max_total_read} bytes")
        self.check()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class BoundedReader(SeekableView):
    """A read-only, seekable view of ``fh`` (``size`` bytes) that charges every read to ``budget``."""

    def __init__(self, fh: BinaryIO, size: int, budget: Budget):
        super().__init__()
        self._fh = fh
        self._size = size
        self._pos = 0
        self.budget = budget

    @property
    def size(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        n = max(0, min(n, self._size - self._pos))
        self.budget.charge(n)
        if n == 0:
            return b""
        self._fh.seek(self._pos)
        data = self._fh.read(n)
        self._pos += len(data)
        return data

    def pread(self, offset: int, n: int) -> bytes:
        self.seek(offset)
        return self.read(n)
