"""Writing data into a file with what is zero left out, as holes: the block store's packs and
an export written into a local bucket (``pipeline.sinks``) both write this way, in calls the
page cache takes best on a VM like the benchmark's."""

from __future__ import annotations

from vmimport.vectored import pwritev_all

# Zeros are found at this granularity (aligned to the offsets given): a check is a
# memcmp that stops at the first non-zero byte, plus ~0.3 µs of Python; 8 per 512 KiB block is
# noise, 128 (4 KiB) would cost more than the writes it saves.
ZERO_CHUNK = 64 * 1024
_ZEROS = bytes(ZERO_CHUNK)


def nonzero_parts(within: int, piece: memoryview):
    """``piece`` (at offset ``within`` of its block or file) without its all-zero
    ``ZERO_CHUNK``s: yields (offset, view) for each run of chunks holding a non-zero byte."""
    end = within + len(piece)
    run_start = None
    pos = within
    while pos < end:
        next_pos = min(pos - pos % ZERO_CHUNK + ZERO_CHUNK, end)
        if _ZEROS.startswith(piece[pos - within:next_pos - within]):
            if run_start is not None:
                yield run_start, piece[run_start - within:pos - within]
                run_start = None
        elif run_start is None:
            run_start = pos
        pos = next_pos
    if run_start is not None:
        yield run_start, piece[run_start - within:end - within]


IOV_MAX = 1024
# No write call crosses a multiple of this in the file. The page cache gives a write folios as
# large as the call allows (2 MiB here); on a VM whose host takes idle memory back (this one
# runs with free page reporting), filling memory that has been free for a while costs 2-4x, and
# large folios seem to come from such memory first. Measured on the benchmark VM with 18 GiB
# free: 1.05 GiB written in 8 MiB calls into memory idle for 4 s took 2.6-2.9 s, in 256 KiB
# calls 0.53-0.74 s; the bench disk's import (in process, after 4 s idle) 1.0-1.2 s with the
# 8 MiB pwritev calls this replaces, 0.43-0.55 s with 256 KiB ones. With 9.5 GiB free (more
# page cache) the same imports took 1.08-1.50 s and 0.84-1.18 s: a smaller gain. With the
# memory at hand (just freed, by us or by another writer) both take about the same.
WRITE_CALL = 256 * 1024


def write_segments(fd: int, segments: list[tuple[int, memoryview]]) -> None:
    """Write ``segments`` [(file offset, data)] (increasing): one pwritev per run of segments
    that follow each other inside one ``WRITE_CALL``-aligned window; what lies between
    segments stays a hole."""
    run: list = []
    run_start = run_end = 0
    for offset, data in segments:
        data = memoryview(data).cast("B")
        while data:
            window_end = offset - offset % WRITE_CALL + WRITE_CALL
            part, data = data[:window_end - offset], data[window_end - offset:]
            if run and (offset != run_end or len(run) == IOV_MAX
                        or offset % WRITE_CALL == 0):
                pwritev_all(fd, run, run_start)
                run = []
            if not run:
                run_start = run_end = offset
            run.append(part)
            run_end += len(part)
            offset += len(part)
    if run:
        pwritev_all(fd, run, run_start)
