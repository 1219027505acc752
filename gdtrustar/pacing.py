"""Pacing and back-off for Station calls: a shared token bucket and a capped full-jitter policy.

Station allows a fixed number of API calls per minute per user (docs/decisions.md#rate-limit); that budget, not
our CPU, is the speed limit. Every worker takes a token from one ``TokenBucket`` before each call,
so N threads together never exceed the budget and a steady run sees no 429.

Implementation note: the bucket holds ``capacity`` tokens and a spent token comes back one window
(60 s plus a margin) after it was spent, which is exactly how a windowed server counts ("Request
limit exceeded for the current time period", same entry). A run may therefore use its whole budget at
once and then continue at the budget's pace: any window holds at most ``capacity`` calls, whether
Station counts in fixed minutes or a sliding one. ``capacity`` keeps 1% (at least one call) in
hand and the window a second longer, for clock and latency differences between us and Station.
The budget is per API key, not per process, so a run is ``seed``-ed with the call times of the
previous run's last minute (kept in the ledger): back-to-back runs never burst over the budget.

A 429 that comes anyway (another integration on the same key) pauses every worker for the
server's ``waitTime`` and shrinks the capacity by 10%; it grows back one token per 20 successes.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger(__name__)
WINDOW = 60.0
WINDOW_MARGIN = 1.0


class TokenBucket:
    """Hands out call slots to any number of threads: at most ``capacity`` per window."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.capacity = max(1, math.floor(per_minute) - max(1, math.ceil(per_minute * 0.01)))
        self.limit = self.capacity
        self.window = WINDOW + WINDOW_MARGIN
        self._clock = clock
        self._sleep = sleep
        self._spent: collections.deque = collections.deque()  # slot times, oldest first, ≤ capacity
        self._not_before = clock()
        self._lock = threading.Lock()
        self._streak = 0

    def reserve(self) -> float:
        """Claim the next slot and return how long the caller must wait for it (seconds)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._not_before)
            if self._spent:  # slots stay in order: tokens come back in the order they were spent
                slot = max(slot, self._spent[-1])
            if len(self._spent) >= self.limit:  # the token spent ``limit`` calls ago must be back
                slot = max(slot, self._spent[-self.limit] + self.window)
            self._spent.append(slot)
            while len(self._spent) > self.capacity:
                self._spent.popleft()
            return slot - now

    def acquire(self) -> None:
        """Block until the caller may make one call."""
        wait = self.reserve()
        if wait > 0:
            if wait > 5:
                log.info("waiting %.0fs for Station's per-minute budget (%d calls a minute)", wait, self.capacity)
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Server said "wait": nobody calls before then, and the capacity drops by 10% (floor 1)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)
            self.limit = max(1, math.floor(self.limit * 0.9))
            self._streak = 0

    def succeeded(self) -> None:
        """Recover after a 429: one token of capacity back per 20 successes."""
        with self._lock:
            if self.limit < self.capacity:
                self._streak += 1
                if self._streak >= 20:
                    self.limit += 1
                    self._streak = 0

    def seed(self, ages: list[float]) -> None:
        """Count calls made ``ages`` seconds ago (by an earlier run on this API key) against the window."""
        with self._lock:
            now = self._clock()
            recent = sorted(now - age for age in ages if 0 <= age < self.window)
            self._spent.extend(recent[-self.capacity:])

    def ages(self) -> list[float]:
        """Seconds since each call of the current window (negative: reserved for the future)."""
        with self._lock:
            now = self._clock()
            return [now - slot for slot in self._spent if now - slot < self.window]

    @property
    def share(self) -> float:
        """The fraction of the budget a long run uses: 97% at 600 calls/min, 97% at 60."""
        return self.capacity * (WINDOW / self.window) / self.per_minute


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
