"""The shared token bucket and back-off, with scripted time instead of sleeps."""

from __future__ import annotations

import bisect
import threading

from gdtrustar.pacing import Backoff, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def busiest_minute(times: list[float]) -> int:
    """Most calls in any 60 s window (what a sliding-window server counts)."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 60.0) - i for i, t in enumerate(times))


def paced(per_minute: float, calls: int) -> tuple[TokenBucket, list[float]]:
    """Make ``calls`` paced calls on a scripted clock; return the bucket and each call's time."""
    clock = FakeClock()
    bucket = TokenBucket(per_minute, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(calls):
        bucket.acquire()
        times.append(clock.now)
    return bucket, times


def test_whole_budget_at_once_then_the_budgets_pace_never_over_it():
    bucket, times = paced(600, 3000)
    assert times[bucket.capacity - 1] == 1000.0  # a short run is not slowed down at all
    assert times[bucket.capacity] > 1060.0  # ... and the next call waits for a token to come back
    assert busiest_minute(times) <= bucket.capacity < 600
    long_run_rate = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert long_run_rate >= 0.95 * 600
    assert 0.95 <= bucket.share < 1.0


def test_small_budgets_keep_a_margin_too():
    bucket, times = paced(60, 300)
    assert bucket.capacity == 59
    assert busiest_minute(times) <= 59


def test_bucket_is_shared_by_threads_without_exceeding_it():
    clock = FakeClock()
    lock = threading.Lock()
    bucket = TokenBucket(120, clock=clock, sleep=lambda s: None)
    slots: list[float] = []

    def worker() -> None:
        for _ in range(100):
            wait = bucket.reserve()
            with lock:
                slots.append(clock.now + wait)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(slots) == 400
    assert busiest_minute(slots) <= bucket.capacity


def test_pause_blocks_everyone_and_shrinks_capacity_then_recovers():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.pause(4.243)
    assert bucket.reserve() >= 4.243
    assert bucket.limit < bucket.capacity
    for _ in range(20 * bucket.capacity):
        bucket.succeeded()
    assert bucket.limit == bucket.capacity


def test_backoff_full_jitter_is_capped_and_server_wait_wins():
    backoff = Backoff(base=0.5, cap=4.0, attempts=6, rand=lambda: 1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert Backoff(rand=lambda: 0.0).delay(3) == 0.0
    assert backoff.delay(2, server_wait=7.5) == 7.5


def test_a_new_run_inherits_the_last_minute_of_calls_through_the_ledger(tmp_path):
    from gdtrustar.ledger import Ledger

    clock = FakeClock()
    first = TokenBucket(60, clock=clock, sleep=clock.sleep)
    for _ in range(first.capacity):
        first.acquire()
    clock.now += 10.0
    ledger = Ledger(tmp_path / "ledger.sqlite3", "https://station/api/1.3")
    wall = 1_700_000_000.0
    ledger.save_calls([wall - age for age in first.ages()])
    ledger.commit()
    second = TokenBucket(60, clock=clock, sleep=clock.sleep)
    second.seed([wall - t for t in ledger.recent_calls(wall - second.window)])
    assert abs(second.reserve() - (second.window - 10.0)) < 1e-6  # waits for the first run's tokens
    assert Ledger(tmp_path / "ledger.sqlite3", "https://other/api/1.3").recent_calls(0) == []
