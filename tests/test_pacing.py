"""The shared pacer and back-off, with scripted time instead of sleeps.

The properties of issue 8 are checked here on a scripted clock against the simulator's three
counting models (``tests.pacesim``), quickly and at several quotas; ``test_rate_properties.py``
checks them again end to end, through the CLI on real sockets, in real time.
"""

from __future__ import annotations

import threading

import pytest

from gdtrustar import callstate
from gdtrustar.errors import DeadlineExceededError, InterruptedWaitError
from gdtrustar.pacing import CUT, SPAN, Backoff, Pacer, interruptible_sleep
from tests import pacesim, rates
from tests.sims.station import make_limiter

MODELS = ("fixed", "sliding", "bucket")


def paced(per_minute: float, calls: int) -> tuple[Pacer, list[float]]:
    """Make ``calls`` paced calls one after another on a scripted clock; return the pacer and the times."""
    clock = pacesim.Clock()
    pacer = Pacer(per_minute, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(calls):
        pacer.acquire()
        times.append(clock.now)
    return pacer, times


# -- even pacing (property 1) ------------------------------------------------------------------------
def test_calls_are_spread_evenly_with_a_small_burst_never_the_whole_budget_at_once():
    pacer, times = paced(600, 3000)
    burst = sum(1 for t in times if t == times[0])
    assert 1 <= burst <= 5  # half a second's worth at 10 calls/s, not the minute's 594
    half_second = make_limiter("bucket", 600, 60.0, burst=5)  # the budget's rate, half a second deep
    assert all(half_second.admit(t) is None for t in times)
    assert rates.busiest(times) <= pacer.budget < 600
    assert rates.whole_minute_share(times, 600) >= 0.95


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("quota", [60, 120, 600])
def test_a_steady_run_at_the_servers_limit_sees_no_429_and_uses_95_percent(model, quota):
    out = pacesim.steady(model, quota, quota, seconds=300)
    assert out.rejected == 0
    assert rates.whole_minute_share(out.accepted_times, quota) >= 0.95


@pytest.mark.parametrize("model", MODELS)
def test_latency_jitter_of_a_fifth_of_a_second_costs_no_429_at_120_a_minute(model):
    assert pacesim.steady(model, 120, 120, seconds=300, jitter=0.2).rejected == 0


def test_threads_sharing_the_pacer_never_exceed_it():
    clock = pacesim.Clock()
    pacer = Pacer(120, clock=clock, sleep=lambda s: None)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            ticket = pacer.book()
            with lock:
                slots.append(ticket.slot)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(slots) == len(set(slots)) == 400
    server = make_limiter("bucket", 120, 60.0)
    assert all(server.admit(t) is None for t in sorted(slots))
    assert rates.busiest(slots) <= pacer.budget


# -- back to back (property 2) -----------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_back_to_back_runs_continue_one_schedule(model):
    server = make_limiter(model, 60, 60.0)
    first = pacesim.steady(model, 60, 60, seconds=90, server=server)
    ages = [first.clock.now + 0.5 - (first.clock.now - age) for age in first.pacer.ages()]
    clock = pacesim.Clock(first.clock.now + 0.5)  # the next process starts half a second later
    second = pacesim.steady(model, 60, 60, seconds=90, server=server, clock=clock, ages=ages)
    assert first.rejected == 0 and second.rejected == 0


def test_a_seeded_pacer_waits_for_the_earlier_runs_budget():
    clock = pacesim.Clock()
    pacer = Pacer(60, clock=clock, sleep=clock.sleep)
    pacer.seed([10.0 - i * 0.01 for i in range(pacer.budget)])  # a whole budget spent 10 s ago
    assert pacer.book().slot == pytest.approx(clock.now - 10.0 + SPAN)  # when the first of them leaves the window


def test_two_ledgers_on_one_key_share_the_key_state_file(tmp_path):
    a = callstate.state_path(tmp_path, "https://station/api/1.3", "key-1")
    assert a == callstate.state_path(tmp_path, "https://station/api/1.3", "key-1")
    assert a != callstate.state_path(tmp_path, "https://station/api/1.3", "key-2")
    assert a != callstate.state_path(tmp_path, "https://other/api/1.3", "key-1")
    assert "key-1" not in a.name
    first = Pacer(60)
    for _ in range(first.budget):
        first.book()
    callstate.save(first, a)
    assert oct(a.stat().st_mode & 0o777) == "0o600"
    second = Pacer(60)
    callstate.seed(second, a)
    assert second.book().slot > second.clock() + SPAN - 5  # the key's budget is spent: wait for it
    a.write_text("{not json")
    callstate.seed(Pacer(60), a)  # a damaged file is ignored


# -- a 429 is flow control (property 3) ----------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("quota", [60, 600])
def test_a_run_configured_far_above_the_limit_settles_at_80_percent_and_stays(model, quota):
    out = pacesim.steady(model, quota, 100 * quota, seconds=600)
    t0, share = rates.after_congestion(out.calls, quota, model)
    assert t0 is not None and share is not None
    assert share >= 0.8
    assert out.rejected < 60  # seconds of 429s, not a storm: a congestion event costs a few


def test_a_429_pauses_everyone_once_and_concurrent_429s_extend_the_pause():
    clock = pacesim.Clock()
    pacer = Pacer(600, clock=clock, sleep=clock.sleep)
    tickets = [pacer.book() for _ in range(8)]
    pacer.congested(tickets[0], 4.0)
    clock.now += 1.0
    pacer.congested(tickets[1], 4.0)  # seen a second later: the pause ends 5 s after the first, not 8
    assert [pacer.kept(t) for t in tickets] == [t.slot <= 1000.0 for t in tickets]  # due later: book again
    assert pacer.book().slot == pytest.approx(1005.0)


def test_the_pace_is_cut_once_per_congestion_event():
    clock = pacesim.Clock()
    pacer = Pacer(600, clock=clock, sleep=clock.sleep)
    before = pacer.control.at(clock.now)
    tickets = [pacer.book() for _ in range(8)]
    for ticket in tickets:  # every worker in flight saw the same 429
        pacer.congested(ticket, 0.5)
    once = pacer.control.at(clock.now)
    assert once == pytest.approx(CUT * before)
    clock.now += 0.5
    pacer.congested(pacer.acquire(), 0.5)  # booked after the cut: a new event
    assert pacer.control.at(clock.now) == pytest.approx(CUT * once)


def test_the_pace_recovers_within_a_window_of_clean_calls_and_no_burst_follows_a_pause():
    clock = pacesim.Clock()
    pacer = Pacer(600, clock=clock, sleep=clock.sleep)
    full = pacer.control.at(clock.now)
    pacer.congested(pacer.book(), 2.0)
    assert pacer.control.at(clock.now + 2.0) < full
    first, second = pacer.acquire(), pacer.acquire()
    assert first.slot == pytest.approx(1002.0)
    assert second.slot - first.slot == pytest.approx(1 / pacer.control.at(1002.0))
    assert pacer.control.at(1002.0 + SPAN) == pytest.approx(full)  # the growth counts from the pause's end


def test_evidence_sets_the_pace_after_the_first_429_of_a_window_server():
    clock = pacesim.Clock()
    pacer = Pacer(60_000, clock=clock, sleep=clock.sleep)
    for _ in range(600):  # Station took 600 calls in the first few seconds
        pacer.accepted(pacer.book())
        clock.now += 0.005
    pacer.congested(pacer.book(), 60.0 - 3.0)  # ... and says: nothing more until a minute after the first
    assert pacer.control.at(clock.now) * 60 == pytest.approx(0.97 * 600, rel=0.01)


# -- deadlines, interruptions, back-off ----------------------------------------------------------------
def test_a_wait_past_the_deadline_raises_at_once_without_sleeping():
    clock = pacesim.Clock()
    pacer = Pacer(600, clock=clock, sleep=clock.sleep)
    pacer.congested(pacer.acquire(), 100.0)
    with pytest.raises(DeadlineExceededError):
        pacer.acquire(deadline=clock.now + 5)
    assert clock.slept == []
    assert pacer.acquire(deadline=clock.now + 101).slot == pytest.approx(1100.0)


def test_an_interruptible_sleep_ends_when_the_run_stops():
    stop = threading.Event()
    sleep = interruptible_sleep(stop)
    sleep(0)  # not stopped: returns
    outcome: list = []

    def sleeper() -> None:
        try:
            sleep(3600)
        except InterruptedWaitError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(outcome) == 1
    pacer = Pacer(60, sleep=sleep)
    pacer.congested(None, 3600.0)
    with pytest.raises(InterruptedWaitError):
        pacer.acquire()


def test_backoff_full_jitter_is_capped():
    backoff = Backoff(base=0.5, cap=4.0, attempts=6, rand=lambda: 1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert Backoff(rand=lambda: 0.0).delay(3) == 0.0
