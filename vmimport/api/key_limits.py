"""How much of the API one access key may use: a request rate (``RateLimiter``) and a share of
the handler threads (``KeySlots``), so that one client cannot starve the others."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import multiprocessing
import struct
import threading
import time

from .protocol_base import THROTTLED, Refusal

# Requests of one key waiting for a handler thread; more are throttled instead of queued.
MAX_WAITING_PER_KEY = 64


class RateLimiter:
    """A token bucket per access key: ``rate`` requests a second, bursts of ``2 * rate``."""

    def __init__(self, rate: float):
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (2 * self.rate, now))
            allowed, tokens = _take(self.rate, tokens, last, now)
            self._buckets[key] = (tokens, now)
            return allowed


def _take(rate: float, tokens: float, last: float, now: float) -> tuple[bool, float]:
    """One request from a bucket holding ``tokens`` at ``last``: allowed?, and what is left."""
    tokens = min(2 * rate, tokens + (now - last) * rate)
    return (True, tokens - 1) if tokens >= 1 else (False, tokens)


class SharedRateLimiter:
    """``RateLimiter``'s token buckets in memory shared by every API process forked after it
    is made (``serve`` with ``api_processes`` > 1), so a key's rate is the same whichever
    process its connections reach. Keys are found by a hash of them, in ``SLOTS`` slots; when
    the ``PROBES`` slots of a key are taken, the one idle longest is given to it (that key's
    bucket starts full again: never a refusal a key has not earned)."""

    SLOTS = 4096
    PROBES = 8
    _ENTRY = struct.Struct("16sdd")  # key digest, tokens, last refill (time.monotonic)

    def __init__(self, rate: float):
        self.rate = rate
        self._table = mmap.mmap(-1, self.SLOTS * self._ENTRY.size)  # shared across fork
        self._lock = multiprocessing.get_context("fork").Lock()

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        first = int.from_bytes(digest[:4], "little") % self.SLOTS
        now = time.monotonic()
        entry = self._ENTRY
        # A process killed inside this section would hold the lock for good: rather than
        # every process stopping here, requests then go unlimited.
        if not self._lock.acquire(timeout=1.0):
            return True
        try:
            chosen, oldest = None, None
            for probe in range(self.PROBES):
                offset = ((first + probe) % self.SLOTS) * entry.size
                held, tokens, last = entry.unpack_from(self._table, offset)
                if held == digest:
                    chosen = offset
                    break
                if oldest is None or last < oldest[1]:
                    oldest = (offset, last)
            if chosen is None:
                chosen, tokens, last = oldest[0], 2 * self.rate, now
            allowed, tokens = _take(self.rate, tokens, last, now)
            entry.pack_into(self._table, chosen, digest, tokens, now)
            return allowed
        finally:
            self._lock.release()


class KeySlots:
    """How many handlers of one access key run at once: ``per_key`` while it is the only key
    using the API, its share of ``per_key`` (at least one) while others are. Handlers share
    one interpreter lock, so a key running several costly requests at once slows every other
    key's answers (a DescribeImages polled beside a key replaying the worst allowed requests:
    p99 90 ms with 3 of the 4 threads for the abuser, 44 ms with 1). A key counts as using the
    API while it has requests running or waiting, and for ``ACTIVE_WINDOW`` seconds after its
    last one (a client polling every few milliseconds is not idle between two polls). Waiting
    costs no thread."""

    ACTIVE_WINDOW = 1.0

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._changed = asyncio.Condition()
        self._running: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}

    def limit(self, key: str) -> int:
        now = time.monotonic()
        others = sum(1 for k, seen in self._last_seen.items()
                     if k != key and (self._running.get(k) or self._waiting.get(k)
                                      or now - seen < self.ACTIVE_WINDOW))
        return self.per_key if others == 0 else max(1, self.per_key // (others + 1))

    @contextlib.asynccontextmanager
    async def hold(self, key: str):
        async with self._changed:
            self._last_seen[key] = time.monotonic()
            if self._waiting.get(key, 0) >= MAX_WAITING_PER_KEY:
                raise Refusal(THROTTLED, f"Request limit exceeded: access key {key} already has "
                              f"{self._running.get(key, 0)} requests running and "
                              f"{self._waiting[key]} waiting.")
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                await self._changed.wait_for(lambda: self._running.get(key, 0) < self.limit(key))
            finally:
                self._waiting[key] -= 1
            self._running[key] = self._running.get(key, 0) + 1
        try:
            yield
        finally:
            async with self._changed:
                self._running[key] -= 1
                self._last_seen[key] = time.monotonic()
                self._changed.notify_all()
            self._forget_idle()

    def _forget_idle(self) -> None:
        """Drop keys idle for a while, so the tables stay as small as the set of active keys."""
        if len(self._last_seen) > 64:
            now = time.monotonic()
            for k in [k for k, seen in self._last_seen.items()
                      if not self._running.get(k) and not self._waiting.get(k)
                      and now - seen > 10 * self.ACTIVE_WINDOW]:
                self._last_seen.pop(k)
                self._running.pop(k, None)
                self._waiting.pop(k, None)
