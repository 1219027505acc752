"""How the rate properties of issue 8 are measured, from call times; shared by tests and benchmarks.

Inputs are the simulator's (or a scripted simulation's) API calls as ``(arrival time, accepted)``
pairs on the server's clock, in arrival order. Token calls are not API calls and are left out.

* ``whole_minute_share``: calls in the run's first k whole 60 s windows (k = span // 60, counted from
  the first call) over k x quota: property 1's "at least 95% of the budget in whole minutes".
* ``after_congestion``: property 3. t0 is when the first 429 said Station would accept calls again
  (its arrival plus its waitTime; under a window model that can be a minute after it). Under the
  fixed-window model, each of the server's own windows from the one starting at t0 (its waitTime
  runs to a window's end) to the last call must hold at least 80% of the quota in accepted calls;
  under the other models, every 60 s window that starts at an accepted call at or after t0 + 30 s
  and ends by the last call. The result is the least such count over the quota (None when there is
  no full minute to measure).
"""

from __future__ import annotations

import bisect
import math
from typing import Optional, Sequence

WINDOW = 60.0


def busiest(times: Sequence[float], window: float = WINDOW) -> int:
    """Most calls in any ``window`` seconds."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def whole_minute_share(times: Sequence[float], quota: float, window: float = WINDOW) -> Optional[float]:
    """Share of the budget used in the run's whole windows; None for a run shorter than one."""
    times = sorted(times)
    if len(times) < 2:
        return None
    whole = int((times[-1] - times[0]) // window)
    if not whole:
        return None
    return bisect.bisect_left(times, times[0] + whole * window) / (whole * quota)


def after_congestion(calls: Sequence[tuple[float, Optional[float]]], quota: float, model: str,
                     window: float = WINDOW) -> tuple[Optional[float], Optional[float]]:
    """(t0, least accepted share of a full minute from t0 + 30 s); ``calls`` are (time, waitTime s or None)."""
    first = next(((t, wait) for t, wait in calls if wait is not None), None)
    if first is None:
        return None, None
    t0 = first[0] + first[1]
    accepted = sorted(t for t, wait in calls if wait is None)
    end = max(t for t, _ in calls)
    if model == "fixed":
        k, counts = math.ceil((t0 - 0.5) / window), []  # t0 is a window's start, give or take latency
        while (k + 1) * window <= end:
            counts.append(bisect.bisect_left(accepted, (k + 1) * window) - bisect.bisect_left(accepted, k * window))
            k += 1
    else:
        starts = [t for t in accepted if t >= t0 + 30 and t + window <= end]
        counts = [bisect.bisect_left(accepted, s + window) - bisect.bisect_left(accepted, s) for s in starts]
    return t0, (min(counts) / quota if counts else None)


def sim_calls(sim) -> list[tuple[float, Optional[float]]]:
    """A StationSim's API calls that met its rate limit: (arrival, waitTime in s for a 429, else None).

    Token calls, dropped connections, 5xx (injected before the limit is checked) and other errors
    are left out.
    """
    return [(c.time, (c.wait_ms or 0) / 1000 if c.status == 429 else None)
            for c in sim.calls if c.kind != "token" and (0 < c.status < 400 or c.status == 429)]
