"""The read-only, seekable file object every view of ours over stored bytes is (a bounded
inspection reader, a snapshot, a logical volume): one place that keeps the position and
answers what ``io`` and dissect ask of a raw stream. A subclass sets ``size`` and ``read``s at
``_pos``."""

from __future__ import annotations

import io


class SeekableView(io.RawIOBase):
    size: int
    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)
