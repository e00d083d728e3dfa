"""preadv_all / pwritev_all go on from exactly where a short preadv/pwritev stopped."""

from __future__ import annotations

import os

from vmimport.vectored import preadv_all, pwritev_all


def _short(real, most: int, end: int):
    """``real`` (os.preadv or os.pwritev) moving at most ``most`` bytes per call, and refusing
    to go past ``end`` (a helper that lost its place would otherwise write without end)."""
    def call(fd, views, offset):
        assert offset < end, f"asked to go on at byte {offset}, past {end}"
        left, capped = most, []
        for view in views:
            if not left:
                break
            capped.append(view[:left])
            left -= len(capped[-1])
        return real(fd, capped, offset)
    return call


def test_short_writes_and_reads_are_carried_through(tmp_path, monkeypatch):
    data = os.urandom(100_000)
    parts = [memoryview(data)[a:b] for a, b in [(0, 7), (7, 7), (7, 40_000), (40_000, 100_000)]]
    monkeypatch.setattr(os, "pwritev", _short(os.pwritev, 4099, 5 + len(data)))
    monkeypatch.setattr(os, "preadv", _short(os.preadv, 3001, 5 + len(data) + 1))
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        pwritev_all(fd, parts, 5)
        assert os.pread(fd, 200_000, 0) == bytes(5) + data
        buffers = [bytearray(10), bytearray(0), bytearray(60_000), bytearray(50_000)]
        got = preadv_all(fd, [memoryview(b) for b in buffers], 5)
    finally:
        os.close(fd)
    assert got == len(data)  # the file ends 10 bytes before the last buffer does
    assert b"".join(buffers)[:got] == data
