"""preadv/pwritev carried through to the end: the kernel may move fewer bytes than asked (a
signal, a short file, a full pipe), and both the source reader and the pack writer must go on
from exactly where it stopped."""

from __future__ import annotations

import os


def preadv_all(fd: int, views: list[memoryview], offset: int) -> int:
    """Fill ``views`` one after the other from ``offset``; returns the bytes read, fewer only
    at the end of the file."""
    views = [v for v in views if len(v)]
    done = 0
    while views:
        n = os.preadv(fd, views, offset + done)
        if not n:
            break
        done += n
        _advance(views, n)
    return done


def pwritev_all(fd: int, views: list[memoryview], offset: int) -> None:
    """Write ``views`` one after the other at ``offset``, all of them."""
    views = list(views)
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        _advance(views, n)


def _advance(views: list[memoryview], n: int) -> None:
    """Drop the first ``n`` bytes of ``views`` (in place)."""
    while views and n >= len(views[0]):
        n -= len(views.pop(0))
    if n:
        views[0] = views[0][n:]
