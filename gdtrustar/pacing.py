"""Pacing and back-off for Station calls: a shared token bucket and a capped full-jitter policy.

Station allows a fixed number of API calls per minute per user (api-facts A12); that budget, not
our CPU, is the speed limit. Every worker takes a token from one ``TokenBucket`` before each call,
so N threads together never exceed the rate and a steady run sees no 429. A 429 that comes anyway
(another integration on the same key) pauses every worker for the server's ``waitTime`` and lowers
the rate a little; the rate creeps back up after a run of successes.

Implementation note: the bucket holds at most one token, so any window of ``w`` seconds contains at
most ``rate * w + 1`` calls. Pacing at ``SAFETY`` of the budget keeps a sliding one-minute window
strictly under it even with the run's extra enclave-check call.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

SAFETY = 0.97


class TokenBucket:
    """Hands out call slots at ``per_minute * SAFETY`` calls per minute to any number of threads."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_rate = per_minute * SAFETY / 60.0
        self.rate = self.max_rate
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self._lock = threading.Lock()
        self._streak = 0

    def reserve(self) -> float:
        """Claim the next slot and return how long the caller must wait for it (seconds)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
            return slot - now

    def acquire(self) -> None:
        """Block until the caller may make one call."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Server said "wait": nobody calls before then, and the rate drops by 10% (floor 10%)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)
            self.rate = max(self.max_rate * 0.1, self.rate * 0.9)
            self._streak = 0

    def succeeded(self) -> None:
        """Recover the rate slowly after a 429: +5% after every 20 successes."""
        with self._lock:
            if self.rate < self.max_rate:
                self._streak += 1
                if self._streak >= 20:
                    self.rate = min(self.max_rate, self.rate * 1.05)
                    self._streak = 0


@dataclass
class Backoff:
    """Capped exponential back-off with full jitter (botocore's standard mode)."""

    base: float = 0.5
    cap: float = 20.0
    attempts: int = 6
    rand: Callable[[], float] = random.random

    def delay(self, attempt: int, server_wait: Optional[float] = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based); the server's wait wins when given."""
        if server_wait is not None:
            return server_wait
        return self.rand() * min(self.cap, self.base * (2 ** (attempt - 1)))
