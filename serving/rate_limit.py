"""Per-client request rate limiting: one token bucket per client address."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SECONDS_PER_MINUTE = 60.0


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by client: ``burst`` requests at once, refilled at
    ``per_minute`` requests a minute; ``per_minute <= 0`` turns limiting off.

    Buckets that have refilled completely are forgotten, so memory follows the number
    of clients seen in the last ``burst / rate`` seconds, not all clients ever seen.
    """

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute > 0 and burst < 1:
            raise ValueError(f"serving.rate_limit_burst={burst} must be >= 1 when limiting")
        self.rate = per_minute / SECONDS_PER_MINUTE
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.rate > 0

    def acquire(self, client: str) -> float:
        """Take one request's token for ``client``: 0.0 when allowed, else the seconds
        until a token is free (the request is refused and nothing is taken)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            self._forget_full(now)
            bucket = self._buckets.setdefault(client, _Bucket(self.burst, now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        """``Retry-After`` takes whole seconds: round up, at least 1."""
        return str(max(1, math.ceil(wait_s)))

    def _forget_full(self, now: float) -> None:
        refill_s = self.burst / self.rate
        stale = [k for k, b in self._buckets.items() if now - b.updated >= refill_s]
        for key in stale:
            del self._buckets[key]
