"""Per-API-key rate limiting with a token bucket (in memory, per gateway replica).

WHY a token bucket: it allows a short burst up to the per-minute budget while holding the long-run rate,
and it tells the client exactly how long to wait (Retry-After). With several replicas each keeps its own
buckets, so the effective limit is per replica; a shared limit would need the shared job store's backend.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for `key`; returns 0.0 when allowed, else the seconds to wait."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(float(self.per_minute), now))
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))


class AuthFailureThrottle:
    """Failed API-key attempts per client address in a sliding window (in memory, per replica).

    WHY per address and not per key: a guesser sends a different wrong key each time. After `limit` wrong
    keys within `window_s`, that address gets 429 (with Retry-After: until its oldest failure leaves the
    window) for every key, right or wrong, so guessing cannot go on and cannot learn from the answers.
    Missing keys do not count (a client that forgot the header is not guessing). Tracked addresses are
    bounded; the oldest are forgotten first.
    """

    MAX_ADDRESSES = 50_000

    def __init__(self, limit: int, window_s: float, clock=time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(address, ()) if now - t < self.window_s]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str) -> float:
        """0.0 while `address` may try a key, else the seconds until it may again."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[-self.limit] + self.window_s - now)

    def record_failure(self, address: str) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            times.append(now)
            self._failures.pop(address, None)
            self._failures[address] = times[-self.limit :]  # re-inserted: dict order = least recent first
            while len(self._failures) > self.MAX_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
