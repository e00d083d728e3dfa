"""Read many scattered pieces of a random-access image with few, large reads.

The sparse formats (VHD, VHDX, qcow2, monolithicSparse VMDK) list where each allocated block
lives in the file. Reading block by block would cost one ranged GET per block on S3, so
`read_pieces` groups pieces that follow each other in the file (small holes between them are
read through) into reads of up to `MAX_READ` bytes, keeps `AHEAD` reads in flight on a
helper thread (I/O overlaps the caller's hashing), and hands each piece back as a zero-copy
view, in the order given. A read that comes back short (the file ends early) is reported
through the caller's `short` callback, which names the structure at fault.

From a local file, pieces whose bytes are the guest's bytes as they are need not be read here
at all: `defer` hands them on as `FileRange`s, which the block writer reads itself.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

MAX_READ = 4 << 20  # with AHEAD reads in flight; 8 MiB put compressed qcow2 over 256 MiB PSS
MAX_GAP = 64 << 10  # read through holes up to this size instead of issuing another request
AHEAD = 2

Piece = tuple[int, int, Any]  # (file offset, length, tag)


class FileRange:
    """``length`` bytes at ``offset`` of a local source, not read yet. The block writer reads
    them itself, straight into its own buffer, right before hashing and storing them: the
    bytes are copied once and are still in the CPU's cache when they are hashed and written.
    (Where the guest's bytes lie in the file as they are: raw, fixed VHD, plain clusters.)
    Slicing gives a sub-range, as on a memoryview."""

    __slots__ = ("source", "offset", "length", "short")

    def __init__(self, source, offset: int, length: int,
                 short: Callable[[int], Exception]):
        self.source, self.offset, self.length = source, offset, length
        self.short = short  # short(got_end): the error when the file ends early

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> "FileRange":
        start, stop, step = key.indices(self.length)
        if step != 1:
            raise ValueError("a FileRange slices only with step 1")
        return FileRange(self.source, self.offset + start, max(0, stop - start), self.short)

    def read_into(self, view: memoryview) -> None:
        FileRange.read_many([(self, view)])

    @staticmethod
    def read_many(reads: list[tuple["FileRange", memoryview]]) -> None:
        """Read each range into its view; ranges that follow each other in one file go in one
        ``preadv`` (raw and fixed VHD are one long stretch cut into blocks: a call per piece
        cost a system call and a wait to take the GIL back, per piece)."""
        run: list[tuple[FileRange, memoryview]] = []
        for item in reads:
            if run and (item[0].source is not run[-1][0].source or len(run) == 64
                        or item[0].offset != run[-1][0].offset + run[-1][0].length):
                _read_run(run)
                run = []
            run.append(item)
        if run:
            _read_run(run)

    def tobytes(self) -> bytes:
        """The bytes, read now (as ``memoryview.tobytes``; for tests and tools)."""
        buffer = memoryview(bytearray(self.length))
        self.read_into(buffer)
        return bytes(buffer)


def _read_run(run: list[tuple[FileRange, memoryview]]) -> None:
    first = run[0][0]
    got = first.source.readv_into(first.offset, [view[:piece.length] for piece, view in run])
    for piece, _ in run:  # the error names the piece the file ended in
        if got < piece.length:
            raise piece.short(piece.offset + got)
        got -= piece.length


def can_defer(source) -> bool:
    """Whether ``source`` can hand out ``FileRange``s (a local file, read with preadv)."""
    return callable(getattr(source, "readv_into", None))


def without_holes(guest: int, data) -> Iterator[tuple[int, Any]]:
    """``(guest, data)`` minus the stretches of a ``FileRange`` that are holes in a sparse
    file (they read as zeros, so need not be read at all: qemu-img leaves the unwritten parts of
    VHD, VHDX and VMDK blocks as holes, up to 3/4 of the file). Other data passes unchanged."""
    if not isinstance(data, FileRange):
        yield guest, data
        return
    start = data.offset
    for lo, hi in data_regions(data.source, start, start + data.length):
        yield guest + lo - start, data[lo - start:hi - start]


def group_pieces(pieces: Iterable[Piece], max_read: int = MAX_READ,
                 max_gap: int = MAX_GAP) -> Iterator[tuple[int, int, list[Piece]]]:
    """(start, end, pieces) per read: consecutive pieces that start inside or at most
    `max_gap` bytes after the span read so far, spanning at most `max_read` bytes (a single
    larger piece gets a read of its own)."""
    start = end = -1
    group: list[Piece] = []
    for piece in pieces:
        offset, length, _ = piece
        stop = max(end, offset + length)
        # A piece may overlap the one before or lie back inside the span already planned
        # (qemu packs compressed clusters into shared sectors and into the gap before the next
        # aligned cluster), but a read never grows backwards.
        if group and start <= offset <= end + max_gap and stop - start <= max_read:
            group.append(piece)
            end = stop
            continue
        if group:
            yield start, end, group
        start, end, group = offset, offset + length, [piece]
    if group:
        yield start, end, group


RUN = 4 << 20  # longest run of pieces that join_runs hands on as one


def join_runs(pieces: Iterable[Piece], joinable: Callable[[Any], bool],
              joined: Callable[[Any, int], Any]) -> Iterator[Piece]:
    """Pieces that follow each other both in the file and in the guest, joined into one piece
    of up to ``RUN`` bytes. Tags start with the guest offset; ``joinable(tag)`` says which
    pieces may join (not compressed ones), ``joined(first tag, length)`` tags a run (it keeps
    the first piece's table entry for messages). qemu-img writes grains and clusters in guest
    order, so an image is mostly such runs, and every later stage (reading, hashing, writing)
    then handles a few large pieces instead of one per 64 KiB grain or cluster."""
    run = None
    for piece in pieces:
        offset, length, tag = piece
        if run is not None:
            run_offset, run_length, run_tag = run
            if (joinable(tag) and offset == run_offset + run_length
                    and tag[0] == run_tag[0] + run_length and run_length + length <= RUN):
                run = (run_offset, run_length + length, run_tag)
                continue
            yield run[0], run[1], joined(run[2], run[1])
            run = None
        if joinable(tag):
            run = piece
        else:
            yield piece
    if run is not None:
        yield run[0], run[1], joined(run[2], run[1])


def read_pieces(source, pieces: Iterable[Piece], short: Callable[[Piece, int], Exception],
                account: Callable[[int], None] = lambda n: None, *, max_read: int = MAX_READ,
                max_gap: int = MAX_GAP, ahead: int = AHEAD,
                defer: Callable[[Any], bool] | None = None,
                ) -> Iterator[tuple[Any, memoryview | FileRange]]:
    """Yield ``(tag, view)`` for every piece, in the given order.

    ``short(piece, got_end)`` builds the exception raised when the file ends (at ``got_end``)
    before the piece does; ``account(n)`` is told of every ``n`` bytes read. With ``defer``,
    a read whose pieces all satisfy ``defer(tag)`` is not made: its pieces come as
    ``FileRange``s (when the source allows it, see ``can_defer``), for the block writer to read.
    """
    deferring = defer is not None and can_defer(source)
    pool = ThreadPoolExecutor(1, thread_name_prefix="image-read")
    pending: deque = deque()
    try:
        for start, end, group in group_pieces(pieces, max_read, max_gap):
            if deferring and all(defer(tag) for _, _, tag in group):
                pending.append((start, group, None))
            else:
                pending.append((start, group, pool.submit(source.read_at, start, end - start)))
            if len(pending) > ahead:
                yield from _split(source, pending.popleft(), short, account)
        while pending:
            yield from _split(source, pending.popleft(), short, account)
    finally:
        for *_, future in pending:
            if future is not None:
                future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def _split(source, item, short, account) -> Iterator[tuple[Any, memoryview | FileRange]]:
    start, group, future = item
    if future is None:
        for piece in group:
            offset, length, tag = piece
            account(length)
            yield tag, FileRange(source, offset, length,
                                 lambda got_end, piece=piece: short(piece, got_end))
        return
    data = future.result()
    account(len(data))
    view = memoryview(data)
    for piece in group:
        offset, length, tag = piece
        lo = offset - start
        if lo + length > len(view):
            raise short(piece, start + len(view))
        yield tag, view[lo : lo + length]


def bit_runs(bitmap: bytes, count: int) -> Iterator[tuple[int, int]]:
    """(first, n) runs of set bits among the first `count` bits, most significant bit first
    (the order VHD's sector bitmaps use)."""
    if not count:
        return
    bits = format(int.from_bytes(bitmap, "big"), f"0{len(bitmap) * 8}b")[:count]
    at = bits.find("1")
    while at >= 0:
        stop = bits.find("0", at)
        if stop < 0:
            stop = count
        yield at, stop - at
        at = bits.find("1", stop)


def data_regions(source, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) ranges of [start, end) that may hold data.

    A source that knows where its holes are (a sparse local file: `LocalSource.data_ranges`,
    SEEK_DATA/SEEK_HOLE) offers ``data_ranges(offset)``; a hole reads as zeros, so fixed-size
    formats skip it. Any other source: the whole range.
    """
    ranges = getattr(source, "data_ranges", None)
    if ranges is None:
        yield start, end
        return
    for lo, hi in ranges(start):
        if lo >= end:
            return
        lo, hi = max(lo, start), min(hi, end)
        if lo < hi:
            yield lo, hi


def table(raw: bytes | memoryview, typecode: str, big_endian: bool) -> array:
    """An on-disk table of unsigned integers ('I' = u32, 'Q' = u64) as a native array."""
    out = array(typecode)
    out.frombytes(raw)
    if big_endian != (sys.byteorder == "big"):
        out.byteswap()
    return out
