"""The shapes every format reader shares: where bytes come from (`Source`), the bounds the
server enforces (`Limits`), and what a reader hands on (`GuestDisk`).

They live apart from `__init__` so that the readers (`raw`, `vmdk_stream`) can import them
without importing each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

SECTOR = 512

# AWS's wording for "this is not an image we take"; our messages start with it and then say
# what we found, so scripts matching on AWS's text keep working.
UNSUPPORTED = "Disk validation failed [Unsupported specified file format]"
# AWS's wording for a damaged image.
CORRUPTED = "Provided image file was corrupted."
# AWS's wording for a grain that inflates to the wrong size.
BAD_LENGTH = "Uncompressed data has invalid length"


@runtime_checkable
class Source(Protocol):
    """The user's bytes, however they are fetched (a local file, an S3 object, a URL)."""

    description: str  # e.g. "s3://bucket/disk.vmdk", used in messages
    size: int  # total bytes

    def read_at(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset`; short only at EOF."""
        ...

    def stream(self, offset: int = 0, chunk_size: int = 8 << 20) -> Iterator[bytes]:
        """Sequential chunks from `offset` to EOF."""
        ...


@dataclass
class Limits:
    """Bounds that keep one hostile image from costing the server more than a real one."""

    max_virtual_size: int = 16 * 1024**4  # AWS: the disk must be < 16 TiB
    inflate_threads: int = 2


class GuestDisk(ABC):
    """A guest disk exposed as its allocated extents, read front to back exactly once.

    Readers yield ``(guest_offset, data)`` in strictly increasing, non-overlapping order; any
    range not yielded reads as zeros. That lets the caller store blocks as they arrive without
    a temporary file, and skip unallocated space for free.
    """

    format: str = "RAW"  # as AWS shows it in SnapshotDetails.Format
    virtual_size: int = 0
    # Added to the faults that deferred work finds later (see ``deferred_extents``): where the
    # disk sits, when it is a member of a container (OVA).
    fault_where: str = ""

    def __init__(self) -> None:
        self._consumed = 0

    @abstractmethod
    def extents(self) -> Iterator[tuple[int, bytes | memoryview]]:
        """(guest offset, data), increasing, non-overlapping; gaps read as zeros."""

    def deferred_extents(self) -> Iterator[tuple[int, object]]:
        """``extents()`` for the block writer: where a reader can leave work on its data to
        the writer's threads (inflating compressed grains: ``vmdk_grains.GrainRun``), pieces
        come as deferred ranges (``len``, slicing, ``read_into(view)``) that may fail when
        read. Other readers give ``extents()``."""
        return self.extents()

    @property
    def bytes_consumed(self) -> int:
        """Source bytes read so far (a plain int read: safe from another thread)."""
        return self._consumed


def human_size(n: int) -> str:
    """1125899906842624 -> '1 PiB', for messages a person reads."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            text = f"{n:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def too_large(what: str, size: int, limits: Limits) -> str:
    return (
        f"The disk image is too large: {what} declares a virtual size of {size} bytes "
        f"({human_size(size)}); this server accepts at most {human_size(limits.max_virtual_size)}"
    )
