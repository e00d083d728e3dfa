"""Read a sequential stream of chunks as if it were a file, without copying the common case.

Stream formats (streamOptimized VMDK, and later OVA) are parsed front to back from
`Source.stream()`. `ByteCursor.take(n)` returns a zero-copy memoryview when the `n` bytes lie
in the current chunk, and joins only the rare pieces that straddle two chunks. Memory stays at
one chunk plus whatever views the caller still holds.
"""

from __future__ import annotations

from typing import Iterator


class ByteCursor:
    def __init__(self, chunks: Iterator[bytes], start: int = 0):
        self._chunks = iter(chunks)
        self._buf: bytes = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self.offset = start  # file offset of the next byte take() returns
        self.received = start  # file offset just past the last byte pulled from the stream
        self.eof = False

    def _pull(self) -> bool:
        """Make the next non-empty chunk current; False at end of stream."""
        while not self.eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
                break
            if chunk:
                self._buf = chunk if isinstance(chunk, bytes) else bytes(chunk)
                self._view = memoryview(self._buf)
                self._pos = 0
                self.received += len(chunk)
                return True
        return False

    def take(self, n: int) -> memoryview | bytes:
        """The next `n` bytes, or fewer only at end of stream (the caller names the error)."""
        end = self._pos + n
        if end <= len(self._buf):
            view = self._view[self._pos : end]
            self._pos = end
            self.offset += n
            return view
        parts = [self._view[self._pos :]]
        have = len(parts[0])
        self.offset += have
        self._pos = len(self._buf)
        while have < n and self._pull():
            piece = self._view[: n - have]
            self._pos = len(piece)
            self.offset += len(piece)
            have += len(piece)
            parts.append(piece)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Advance `n` bytes without keeping them; returns how many were skipped (short at EOF)."""
        skipped = 0
        while True:
            step = min(n - skipped, len(self._buf) - self._pos)
            self._pos += step
            self.offset += step
            skipped += step
            if skipped == n or not self._pull():
                return skipped
