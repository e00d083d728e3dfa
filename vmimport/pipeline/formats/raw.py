"""A raw image is the guest disk itself: pass the source's chunks through as extents.

The guest disk is the image rounded up to whole 512-byte sectors (as EBS sees it), the final
partial sector reading as zeros.
"""

from __future__ import annotations

from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, GuestDisk, Limits, too_large
from .ranges import FileRange, can_defer

CHUNK = 4 << 20
DEFERRED_CHUNK = 64 << 20  # a FileRange holds no bytes: any size will do


class RawDisk(GuestDisk):
    format = "RAW"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source = source
        self.virtual_size = -(-source.size // SECTOR) * SECTOR
        if self.virtual_size > limits.max_virtual_size:
            raise ImportFailure(too_large(f"the raw image {source.description}",
                                          self.virtual_size, limits))

    def extents(self) -> Iterator[tuple[int, bytes | memoryview]]:
        ranges = getattr(self._source, "data_ranges", None)
        if ranges is not None:  # a sparse local file: holes are zeros, skip them
            yield from self._sparse_extents(ranges())
            return
        size = self._source.size
        offset = 0
        for chunk in self._source.stream(0, CHUNK):
            if not chunk:
                continue
            if offset + len(chunk) > size:
                raise ImportFailure(
                    f"{CORRUPTED} The raw image {self._source.description} grew while it was "
                    f"read: more than the {size} bytes it had when the import started"
                )
            end = offset + len(chunk)
            if end == size and size % SECTOR:
                chunk = bytes(chunk) + bytes(-size % SECTOR)
            self._consumed = end
            yield offset, chunk
            offset = end
        if offset != size:
            raise ImportFailure(
                f"{CORRUPTED} The raw image {self._source.description} ended at byte {offset} "
                f"but its size was {size} bytes when the import started"
            )

    def _sparse_extents(self, ranges) -> Iterator[tuple[int, bytes | memoryview | FileRange]]:
        size = self._source.size
        if can_defer(self._source):  # the block writer reads the bytes itself
            def short(got_end: int) -> ImportFailure:
                return ImportFailure(
                    f"{CORRUPTED} The raw image {self._source.description} ended at byte "
                    f"{got_end} but its size was {size} bytes when the import started")

            for start, end in ranges:
                for offset in range(start, end, DEFERRED_CHUNK):
                    length = min(DEFERRED_CHUNK, end - offset)
                    self._consumed = offset + length
                    yield offset, FileRange(self._source, offset, length, short)
            self._consumed = size
            return
        for start, end in ranges:
            offset = start
            while offset < end:
                piece = self._source.read_at(offset, min(CHUNK, end - offset))
                if not piece:
                    raise ImportFailure(
                        f"{CORRUPTED} The raw image {self._source.description} ended at byte "
                        f"{offset} but its size was {size} bytes when the import started")
                if offset + len(piece) == size and size % SECTOR:
                    piece = bytes(piece) + bytes(-size % SECTOR)
                self._consumed = offset + len(piece)
                yield offset, piece
                offset += len(piece)
        self._consumed = size
