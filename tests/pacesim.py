"""A scripted-clock run of the real ``Pacer`` against the simulator's counting models, for fast tests.

Discrete events, no threads, no sleeps: ``workers`` loop book -> (slot due) kept? -> the call arrives
``latency / 2`` later at the server model (``tests.sims.station.make_limiter``) -> its answer comes
back ``latency / 2`` later and goes to ``accepted`` or ``congested``, exactly as ``StationClient``
does. The real-socket tests in ``test_rate_properties.py`` check the same properties end to end.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Optional

from gdtrustar.pacing import Pacer
from tests.sims.station import make_limiter


@dataclass
class Clock:
    """A scripted monotonic clock; sleeping advances it."""

    now: float = 1000.0
    slept: list = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Outcome:
    """What the server model saw: (arrival, waitTime in s or None) per call, and the pacer at the end."""

    calls: list = field(default_factory=list)
    pacer: Optional[Pacer] = None
    clock: Optional[Clock] = None

    @property
    def rejected(self) -> int:
        return sum(1 for _, wait in self.calls if wait is not None)

    @property
    def accepted_times(self) -> list:
        return [t for t, wait in self.calls if wait is None]


def run(pacer: Pacer, clock: Clock, server, *, seconds: float, workers: int = 8, latency: float = 0.05,
        jitter: float = 0.0, seed: int = 0) -> Outcome:
    """Drive ``pacer`` (whose clock is ``clock``) against ``server`` for ``seconds`` of scripted time."""
    rng = random.Random(seed)
    end, order, events, out = clock.now + seconds, itertools.count(), [], Outcome(pacer=pacer, clock=clock)
    for _ in range(workers):
        heapq.heappush(events, (clock.now, next(order), "book", None))
    while events:
        at, _, kind, data = heapq.heappop(events)
        if at > end:
            break
        clock.now = at
        if kind == "book":
            ticket = pacer.book()
            heapq.heappush(events, (max(ticket.slot, at), next(order), "due", ticket))
        elif kind == "due":
            if not pacer.kept(data):
                heapq.heappush(events, (at, next(order), "book", None))
                continue
            heapq.heappush(events, (at + latency / 2 + rng.random() * jitter, next(order), "arrive", data))
        elif kind == "arrive":
            wait_ms = server.admit(at)
            out.calls.append((at, None if wait_ms is None else wait_ms / 1000))
            heapq.heappush(events, (at + latency / 2, next(order), "answer", (data, wait_ms)))
        else:
            ticket, wait_ms = data
            if wait_ms is None:
                pacer.accepted(ticket)
            else:
                pacer.congested(ticket, wait_ms / 1000)
            heapq.heappush(events, (at, next(order), "book", None))
    return out


def steady(model: str, quota: int, configured: float, *, seconds: float, server=None, clock: Optional[Clock] = None,
           ages: Optional[list] = None, **kwargs) -> Outcome:
    """A fresh pacer at ``configured`` calls/min (seeded with ``ages``) against a fresh or given server."""
    clock = clock or Clock()
    pacer = Pacer(configured, clock=clock, sleep=lambda s: None)
    if ages:
        pacer.seed(ages)
    return run(pacer, clock, server or make_limiter(model, quota, 60.0), seconds=seconds, **kwargs)
