"""The shared token bucket and back-off, with scripted time instead of sleeps."""

from __future__ import annotations

import threading

from gdtrustar.pacing import SAFETY, Backoff, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_paces_to_the_budget_with_a_safety_margin():
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)
    for _ in range(601):
        bucket.acquire()
    elapsed = clock.now - 1000.0
    # 600 intervals at 600*SAFETY per minute
    assert abs(elapsed - 600 / (600 * SAFETY / 60)) < 1e-6
    # any 60 s window holds fewer calls than the quota
    assert 60 * bucket.rate + 1 < 600


def test_bucket_is_shared_fairly_by_threads():
    clock = FakeClock()
    lock = threading.Lock()
    bucket = TokenBucket(60, clock=clock, sleep=lambda s: None)
    waits: list[float] = []

    def worker() -> None:
        for _ in range(10):
            wait = bucket.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waits.sort()
    interval = 60 / (60 * SAFETY)
    # 40 distinct slots, one interval apart: no two workers got the same slot
    assert all(abs((b - a) - interval) < 1e-6 for a, b in zip(waits, waits[1:]))


def test_pause_blocks_everyone_and_slows_the_rate_then_recovers():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.pause(4.243)
    assert bucket.reserve() >= 4.243
    assert bucket.rate < bucket.max_rate
    for _ in range(20 * 10):
        bucket.succeeded()
    assert abs(bucket.rate - bucket.max_rate) < 1e-9


def test_backoff_full_jitter_is_capped_and_server_wait_wins():
    backoff = Backoff(base=0.5, cap=4.0, attempts=6, rand=lambda: 1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert Backoff(rand=lambda: 0.0).delay(3) == 0.0
    assert backoff.delay(2, server_wait=7.5) == 7.5
