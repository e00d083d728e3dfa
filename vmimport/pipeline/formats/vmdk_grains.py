"""The grains of a stream-optimized VMDK: each one grain of guest data, deflated on its own.

A grain is inflated either by the reader's own pool (``inflate_grain``, for ``extents()``), or
later by the consumer: a ``GrainRun`` stands for grains that follow each other on the guest
disk, not inflated yet. The block writer inflates it on its own threads straight into the
buffer it hashes and writes from (``read_into``), so inflating, hashing and writing one block
happen on one thread, one block after another, while the other threads do the same with theirs:
the work of a block never waits for a hand-off between two pools (see BENCHMARKS.md, issue 22).
"""

from __future__ import annotations

import zlib

from ..errors import ImportFailure
from .base import BAD_LENGTH, CORRUPTED, SECTOR

try:  # libdeflate: ~2.5x stdlib zlib on grains; both release the GIL.
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - the dependency is declared; keep working without it
    _libdeflate = None

Grain = tuple[int, int, object, int]  # (LBA, file offset of its marker, zlib data, guest bytes)


def inflate_grain(grain: Grain, grain_bytes: int):
    """The grain's guest bytes (exactly its expected length), checked: at most ``grain_bytes``
    are ever inflated (a deflate bomb stops there), and a grain must inflate to its length."""
    lba, at, data, expected = grain
    plain = _inflate(data, lba, at, expected, grain_bytes)
    n = len(plain)
    if n != expected and n != grain_bytes:
        raise ImportFailure(
            f"{BAD_LENGTH}: VMDK grain at LBA {lba} (file offset {at}) inflated to {n} "
            f"bytes, expected {expected}"
        )
    return memoryview(plain)[:expected] if n > expected else plain


def _inflate(data, lba: int, at: int, expected: int, grain_bytes: int):
    if _libdeflate is not None:
        try:
            return _libdeflate.zlib_decompress(data, grain_bytes)
        except _libdeflate.DeflateError:
            pass  # too long, or damaged: let zlib say which
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(data, grain_bytes + 1)
    except zlib.error as exc:
        raise ImportFailure(
            f"{CORRUPTED} VMDK grain at LBA {lba} (file offset {at}): its {len(data)} compressed "
            f"bytes are not valid zlib data ({exc})"
        ) from None
    if len(plain) > grain_bytes:
        raise ImportFailure(
            f"{BAD_LENGTH}: VMDK grain at LBA {lba} (file offset {at}) inflated to more than "
            f"{grain_bytes} bytes, expected {expected}"
        )
    if not inflater.eof:
        raise ImportFailure(
            f"{CORRUPTED} VMDK grain at LBA {lba} (file offset {at}): its {len(data)} compressed "
            f"bytes end in the middle of the zlib stream (after {len(plain)} inflated bytes)"
        )
    if _libdeflate is not None:  # zlib accepted what libdeflate refused
        raise ImportFailure(
            f"{CORRUPTED} VMDK grain at LBA {lba} (file offset {at}): its {len(data)} compressed "
            "bytes are not valid deflate data (rejected by libdeflate)"
        )
    return plain


def inflate_batch(batch: list[Grain], grain_bytes: int) -> list[tuple[int, object]]:
    """Runs on the reader's pool: (guest offset, bytes) for each grain of ``batch``."""
    return [(grain[0] * SECTOR, inflate_grain(grain, grain_bytes)) for grain in batch]


class GrainRun:
    """``length`` guest bytes from ``start`` bytes into the first of ``grains``, grains that
    follow each other on the guest disk (all full but the disk's last), not inflated yet: a
    deferred range as the block writer takes them (``len``, slicing as on a memoryview,
    ``read_into``). Faults are worded as the reader's own, with its ``fault_where``."""

    __slots__ = ("grains", "grain_bytes", "start", "length", "disk")
    # Blocks per writer batch: a run holds its compressed grains (and the 8 MiB read chunks
    # they are views into) until inflated, so the writer's usual 16 held ~20 MiB more than
    # inflating in the reader did (guest bench VMDK, in process: max RSS 92-100 MiB vs 73-79;
    # with 8: 76-84 MiB, CPU-s unchanged).
    batch_blocks = 8

    def __init__(self, grains: list[Grain], grain_bytes: int, start: int, length: int, disk):
        self.grains, self.grain_bytes = grains, grain_bytes
        self.start, self.length, self.disk = start, length, disk

    @classmethod
    def of(cls, grains: list[Grain], grain_bytes: int, disk) -> "GrainRun":
        """The whole of ``grains``."""
        return cls(grains, grain_bytes, 0, (len(grains) - 1) * grain_bytes + grains[-1][3], disk)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> "GrainRun":
        start, stop, step = key.indices(self.length)
        if step != 1:
            raise ValueError("a GrainRun slices only with step 1")
        stop = max(start, stop)
        first = (self.start + start) // self.grain_bytes
        last = -(-(self.start + stop) // self.grain_bytes)
        return GrainRun(self.grains[first:last], self.grain_bytes,
                        self.start + start - first * self.grain_bytes, stop - start, self.disk)

    def read_into(self, view: memoryview) -> None:
        """Inflate the run into ``view`` (``len(self)`` bytes)."""
        grain_bytes, pos, skip, left = self.grain_bytes, 0, self.start, self.length
        try:
            for grain in self.grains:
                if left <= 0:
                    break
                plain = inflate_grain(grain, grain_bytes)
                take = min(len(plain) - skip, left)
                view[pos:pos + take] = plain[skip:skip + take] if skip or take < len(plain) \
                    else plain
                pos, left, skip = pos + take, left - take, 0
        except ImportFailure as exc:
            where = getattr(self.disk, "fault_where", "")
            raise ImportFailure(exc.message + where, exc.kind) from None

    @staticmethod
    def read_many(reads: list[tuple["GrainRun", memoryview]]) -> None:
        for run, view in reads:
            run.read_into(view)

    def tobytes(self) -> bytes:
        """The bytes, inflated now (as ``memoryview.tobytes``; for tests and tools)."""
        buffer = memoryview(bytearray(self.length))
        self.read_into(buffer)
        return bytes(buffer)
