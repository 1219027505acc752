"""Pacing for Station calls: even spacing under any counting model, a 429 as flow control, back-off.

Station allows a number of calls per minute per user (docs/decisions.md#rate-limit) but does not say how it counts
them: per fixed minute, per sliding minute, or as a token bucket refilled every second. One
``Pacer``, shared by every worker, keeps the run's calls inside all three at once:

* a token bucket in GCRA form spaces calls at 97% of the budget's rate, with a burst of half a
  second's worth (at least one call). A server that refills every second accepts that whatever its
  phase, since its own burst is a second's worth;
* a sliding log never lets more than the budget less 1% (at least one call) into any 61 s: what a
  fixed or sliding 60 s window accepts, with a second's margin for clock and latency differences;
* both are ``seed``-ed with the API key's calls of the last 61 s made by earlier runs, so
  back-to-back runs continue one schedule instead of each starting with a full budget.

A 429 is flow control, not a failure (``congested``). It pauses every worker once, until the
server's waitTime: concurrent 429s extend that pause, they do not add up, and calls booked for
later are booked again after it, without a burst. Once per congestion event it also cuts the rate,
to the lower of 85% of the rate in effect and what Station demonstrably accepted over its counting
period (``_evidence``); 429s for calls booked before that cut belong to the same event. From the end
of the pause the rate grows back linearly, regaining the cut within one window of clean calls, and
on towards the configured rate. A run configured far above the real limit therefore settles just
under it (probing it now and then) instead of collapsing, and one that met a passing 429 (another
integration on the key) is back at full pace a minute later.

Implementation note: everything but ``acquire``'s sleep is pure and takes its clock as an argument,
so the tests drive it with scripted timestamps; ``acquire`` sleeps through an injected function,
which the CLI makes interruptible (``interruptible_sleep``) so Ctrl-C ends any wait at once.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Optional

from gdtrustar.errors import DeadlineExceededError, InterruptedWaitError

log = logging.getLogger(__name__)
WINDOW = 60.0
SPAN = WINDOW + 1.0  # the window we count in: a second longer than Station's, for skew and latency
RATE_SHARE = 0.97  # of the budget's rate, and of the rate Station was seen to accept
BURST_SECONDS = 0.5  # burst allowance, in seconds' worth of the rate (at least one call)
CUT = 0.85  # a congestion event keeps at most this share of the rate in effect
MIN_RATE = 1.0 / 60  # calls per second: never slower than one a minute
MIN_EVIDENCE = 3  # accepted calls needed before their rate is trusted over the plain cut


class Ticket(NamedTuple):
    """One booked call: when it may go, and the epoch it was booked in."""

    slot: float
    epoch: int


@dataclass
class RateControl:
    """The rate in effect (calls/s): the configured ceiling, cut on congestion, grown back linearly."""

    ceiling: float
    floor_rate: float = 0.0  # the rate right after the last cut
    since: float = -math.inf  # when calls resumed after the last cut (growth counts from there)

    def at(self, now: float) -> float:
        """The rate at ``now``: the cut is regained within one window, then growth goes on to the ceiling."""
        if self.since == -math.inf:
            return self.ceiling
        slope = self.floor_rate * (1.0 / CUT - 1.0) / SPAN
        return min(self.ceiling, self.floor_rate + slope * max(0.0, now - self.since))

    def cut(self, now: float, evidence: Optional[float], resume: float) -> float:
        """One congestion event: at most ``CUT`` of the rate in effect, and no more than the evidence.

        Growth starts at ``resume`` (the end of the pause): a window of clean calls, not of waiting.
        """
        target = CUT * self.at(now)
        if evidence is not None:
            target = min(target, evidence)
        self.floor_rate, self.since = max(MIN_RATE, min(target, self.ceiling)), max(now, resume)
        return self.floor_rate


class Pacer:
    """Hands out call slots to any number of threads; see the module docstring."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.budget = max(1, math.floor(per_minute) - max(1, math.ceil(per_minute * 0.01)))  # calls per SPAN
        self.control = RateControl(max(MIN_RATE, per_minute / WINDOW * RATE_SHARE))
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._log: collections.deque[float] = collections.deque()  # granted slots of the last SPAN, ascending
        self._accepted: collections.deque[float] = collections.deque()  # slots of calls Station answered
        self._tat = -math.inf  # GCRA's theoretical arrival time
        self._last = -math.inf  # the latest slot booked (slots never go backwards)
        self._not_before = -math.inf  # the end of the current pause
        self._epoch = 0  # bumped whenever bookings are voided (a pause moved, or a cut)
        self._voided: dict[int, float] = {}  # epoch -> when its future bookings were voided
        self._cut_epoch = 0  # the epoch the last cut began: older tickets belong to its event

    # -- slots ------------------------------------------------------------------------------------
    def acquire(self, deadline: Optional[float] = None) -> Ticket:
        """Block until the caller may make one call; return its ticket (for ``accepted``/``congested``).

        Raises ``DeadlineExceededError`` without waiting when the slot lies past ``deadline`` (an
        absolute ``clock()`` value), and whatever the injected sleep raises (an interruption).
        """
        while True:
            ticket = self.book(deadline)
            now = self.clock()
            if ticket.slot > now:
                if ticket.slot - now > 5:
                    log.info("waiting %.0fs for Station's rate limit (%.1f calls a minute)", ticket.slot - now,
                             60 * self.control.at(now))
                self._sleep(ticket.slot - now)
            if self.kept(ticket):
                return ticket

    def book(self, deadline: Optional[float] = None) -> Ticket:
        """Reserve the next slot; the caller calls ``kept`` when it is due."""
        with self._lock:
            now = self.clock()
            interval, tolerance = self._gcra(self.control.at(now))
            slot = max(now, self._not_before, self._tat - tolerance, self._last)
            if len(self._log) >= self.budget:
                slot = max(slot, self._log[-self.budget] + SPAN)
            if deadline is not None and slot > deadline:
                raise DeadlineExceededError(f"the next Station call may go in {slot - now:.0f}s, after the deadline")
            self._tat = max(self._tat, slot) + interval
            self._last = slot
            self._log.append(slot)
            while self._log[0] <= slot - SPAN:
                self._log.popleft()
            return Ticket(slot, self._epoch)

    def kept(self, ticket: Ticket) -> bool:
        """When the slot is due: does it stand? False if a pause or cut since voided it (book again)."""
        with self._lock:
            return ticket.epoch == self._epoch or ticket.slot <= self._voided.get(ticket.epoch, -math.inf)

    def _void(self, now: float) -> None:
        """A pause or a cut: bookings still in the future are void, and the schedule restarts from them.

        Their holders find out in ``kept`` and book again, at the new rate and after the pause, without
        a burst: the first call goes when the pause ends, the next an interval later.
        """
        self._voided[self._epoch] = now  # bookings of the ending epoch due by now stand, later ones are void
        self._voided.pop(self._epoch - 64, None)
        self._epoch += 1
        while self._log and self._log[-1] > now:
            self._log.pop()
        self._last = self._log[-1] if self._log else -math.inf
        interval, tolerance = self._gcra(self.control.at(now))
        self._tat = max(self._last + interval, self._not_before + tolerance)

    @staticmethod
    def _gcra(rate: float) -> tuple[float, float]:
        """Emission interval and burst tolerance for ``rate``."""
        interval = 1.0 / rate
        burst = max(1.0, math.floor(rate * BURST_SECONDS))
        return interval, (burst - 1.0) * interval

    # -- what Station said ---------------------------------------------------------------------------
    def accepted(self, ticket: Optional[Ticket]) -> None:
        """Station answered the call made with ``ticket`` (evidence of what it accepts)."""
        if ticket is None:
            return
        with self._lock:
            self._accepted.append(ticket.slot)
            horizon = self.clock() - 2 * SPAN
            while self._accepted and self._accepted[0] < horizon:
                self._accepted.popleft()

    def congested(self, ticket: Optional[Ticket], wait: float) -> None:
        """A 429 for the call made with ``ticket``: pause everyone until ``wait`` s from now; cut once per event.

        Calls booked before the last cut belong to the event that caused it and only extend the
        pause. ``ticket`` None (a token call) pauses without cutting the rate.
        """
        with self._lock:
            now = self.clock()
            until = now + max(0.0, wait)
            event = ticket is not None and ticket.epoch >= self._cut_epoch  # booked after the last cut
            if event:
                before = self.control.at(now)
                after = self.control.cut(now, self._evidence(now, until), until)
                log.info("Station said 429: pausing %.1fs, pace %.1f -> %.1f calls a minute", wait,
                         60 * before, 60 * after)
            if event or until > self._not_before:
                self._not_before = max(self._not_before, until)
                self._void(now)
            if event:
                self._cut_epoch = self._epoch

    def _evidence(self, now: float, until: float) -> Optional[float]:
        """The rate Station accepted over its counting period, less the usual share; None if too few calls.

        Station takes nothing more until ``until``, so what it accepted since ``until - SPAN`` was
        its whole budget for the time from the first of those calls to ``until``. That is exact for a
        sliding window, an over-estimate (corrected by the next event) for a fixed window entered
        late or a bucket early in a run, and for another integration on the key it is our share.
        """
        recent = [t for t in self._accepted if until - SPAN < t <= now]
        if len(recent) < MIN_EVIDENCE:
            return None
        return RATE_SHARE * len(recent) / max(until - min(recent), 1e-3)

    # -- across runs ----------------------------------------------------------------------------------
    def seed(self, ages: Iterable[float], cut: Optional[tuple[float, float]] = None) -> None:
        """Continue earlier runs' schedule: their call ``ages`` (s ago) and last ``cut`` (rate, s ago).

        Call before the first ``acquire``.
        """
        with self._lock:
            now = self.clock()
            if cut is not None:
                rate, age = cut
                self.control.floor_rate = max(MIN_RATE, min(rate, self.control.ceiling))
                self.control.since = now - age
            for slot in sorted(now - age for age in ages if -SPAN < age < SPAN):
                interval, _ = self._gcra(self.control.at(slot))
                self._tat = max(self._tat, slot) + interval
                self._last = max(self._last, slot)
                self._log.append(slot)
                self._accepted.append(slot)

    def ages(self) -> list[float]:
        """Seconds since each call of the last window (negative: booked for the future)."""
        with self._lock:
            now = self.clock()
            return [now - slot for slot in self._log if now - slot < SPAN]

    def last_cut(self) -> Optional[tuple[float, float]]:
        """(rate after the last cut, seconds ago) while the rate is still below the ceiling, else None."""
        with self._lock:
            now = self.clock()
            if self.control.at(now) >= self.control.ceiling:
                return None
            return self.control.floor_rate, now - self.control.since


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that ends as soon as ``stop`` is set, raising ``InterruptedWaitError``."""

    def sleep(seconds: float) -> None:
        if stop.wait(max(0.0, seconds)):
            raise InterruptedWaitError("not delivered: interrupted while waiting to call Station")

    return sleep


@dataclass
class Backoff:
    """Capped exponential back-off with full jitter (botocore's standard mode), for 5xx and drops."""

    base: float = 0.5
    cap: float = 20.0
    attempts: int = 6
    rand: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based)."""
        return self.rand() * min(self.cap, self.base * (2.0 ** (attempt - 1)))
