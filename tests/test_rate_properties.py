"""Issue 8's rate properties, end to end and in real time, under each of Station's possible counting models.

Every scenario is the installed console script (a subprocess: the scenarios run at the same time,
which an in-process CLI could not) against its own Station simulator on 127.0.0.1, whose quota is
counted per fixed 60 s window, per sliding 60 s window, or as a per-second token bucket (1 s burst):

1. a steady run at ``TRUSTAR_MAX_RATE`` equal to the server's limit: no 429, >= 95% of the budget in
   whole minutes (``tests.rates.whole_minute_share``);
2. runs back to back on one API key, with one ledger and then a second ledger: no 429;
3. a run configured at 100x the real limit: >= 80% of the real rate in every full minute from 30 s
   after the first 429's pause ended (``tests.rates.after_congestion`` says exactly how);

and property 1 or 3 with 5% 5xx plus 5% dropped connections: every finding delivered exactly once,
none in the failures file. A property needs more than a minute of calls, so all scenarios start
together from one module fixture (about 2.5 minutes of wall time in all) and each test reads its
own result. The quota is 120 calls a minute, to keep the CPU cost of ~1,900 findings low.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from tests import rates
from tests.conftest import ROOT, Result, base_env, console_script, write_jsonl
from tests.sims.guardduty import make_finding, to_eventbridge
from tests.sims.station import StationSim
from tests.test_send import assert_exactly_once

pytestmark = pytest.mark.slow
QUOTA = 120
LATENCY = 0.02
MODELS = ("fixed", "sliding", "bucket")


@dataclass
class Scenario:
    """Runs one after another against one simulator; ``runs`` are (findings, configured rate, ledger)."""

    model: str
    runs: list
    faults: bool = False
    results: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    error: Optional[BaseException] = None
    sim: Optional[StationSim] = None

    def play(self, tmp: Path) -> None:
        try:
            with StationSim(latency=LATENCY, quota_per_minute=QUOTA, rate_model=self.model, seed=7) as sim:
                self.sim = sim
                if self.faults:
                    sim.random_faults(0.10, statuses=(500, 503), drop_share=0.5)  # 5% 5xx + 5% drops
                start = 0
                for number, (findings, rate, ledger) in enumerate(self.runs):
                    docs = [to_eventbridge(make_finding(i)) for i in range(start, start + findings)]
                    start += findings
                    self.ids += [d["detail"]["id"] for d in docs]
                    self.results.append(self._send(sim, tmp, docs, rate, ledger, number))
                self.calls = rates.sim_calls(sim)
        except BaseException as exc:  # reported by the test that reads this scenario
            self.error = exc

    def _send(self, sim: StationSim, tmp: Path, docs: list, rate: float, ledger: str, number: int) -> Result:
        path = write_jsonl(tmp / f"run{number}.jsonl", docs)
        failures = tmp / f"failures{number}.jsonl"
        self.failures.append(failures)
        env = {**base_env(tmp), "TRUSTAR_API_ENDPOINT": sim.api_endpoint, "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint,
               "TRUSTAR_API_KEY": "test-key", "TRUSTAR_API_SECRET": "test-secret", "TRUSTAR_ENCLAVE_IDS": "enc-a",
               "TRUSTAR_MAX_RATE": str(rate), "PYTHONPATH": str(ROOT)}
        command = [*console_script(), "send", "--json", "--state", str(tmp / ledger), "--failures", str(failures)]
        proc = subprocess.run([*command, str(path)], capture_output=True, cwd=tmp, env=env, timeout=600)
        return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


SCENARIOS = {
    **{f"steady-{m}": Scenario(m, [(150, QUOTA, "ledger")]) for m in MODELS},
    **{f"back-to-back-{m}": Scenario(m, [(45, QUOTA, "one"), (45, QUOTA, "one"), (45, QUOTA, "two")])
       for m in MODELS},
    "too-high-fixed": Scenario("fixed", [(300, 100 * QUOTA, "ledger")]),
    "too-high-sliding": Scenario("sliding", [(310, 100 * QUOTA, "ledger")]),
    "too-high-bucket": Scenario("bucket", [(200, 100 * QUOTA, "ledger")]),
    "faults-steady-fixed": Scenario("fixed", [(110, QUOTA, "ledger")], faults=True),
    "faults-too-high-bucket": Scenario("bucket", [(110, 100 * QUOTA, "ledger")], faults=True),
}


@pytest.fixture(scope="module")
def played(tmp_path_factory) -> dict:
    threads = [threading.Thread(target=s.play, args=(tmp_path_factory.mktemp(name),), name=name)
               for name, s in SCENARIOS.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return SCENARIOS


def finished(played: dict, name: str) -> Scenario:
    scenario = played[name]
    if scenario.error is not None:
        raise scenario.error
    for result in scenario.results:
        assert result.code == 0, result.stderr[-3000:]
    return scenario


def rejected(scenario: Scenario) -> int:
    return sum(1 for _, wait in scenario.calls if wait is not None)


@pytest.mark.parametrize("model", MODELS)
def test_a_steady_run_at_the_limit_sees_no_429_and_uses_95_percent_of_the_budget(played, model):
    scenario = finished(played, f"steady-{model}")
    assert rejected(scenario) == 0
    share = rates.whole_minute_share([t for t, _ in scenario.calls], QUOTA)
    assert share is not None and share >= 0.95, share


@pytest.mark.parametrize("model", MODELS)
def test_back_to_back_runs_on_one_key_see_no_429_with_one_ledger_or_two(played, model):
    scenario = finished(played, f"back-to-back-{model}")
    assert rejected(scenario) == 0
    assert [r.actions() for r in scenario.results] == [{"created": 45}] * 3


@pytest.mark.parametrize("model", MODELS)
def test_a_run_configured_100x_too_high_reaches_80_percent_of_the_real_rate_and_stays(played, model):
    scenario = finished(played, f"too-high-{model}")
    t0, share = rates.after_congestion(scenario.calls, QUOTA, model)
    assert t0 is not None, "the run never met the server's limit"
    assert share is not None and share >= 0.8, (share, rejected(scenario))
    assert_exactly_once(scenario.sim, scenario.ids)


@pytest.mark.parametrize("name", ["faults-steady-fixed", "faults-too-high-bucket"])
def test_5xx_and_dropped_connections_on_top_still_deliver_every_finding_exactly_once(played, name):
    scenario = finished(played, name)
    assert scenario.sim.count(status=0) > 0 and scenario.sim.count(status=503) + scenario.sim.count(status=500) > 0
    assert [r.actions() for r in scenario.results] == [{"created": len(scenario.ids)}]
    assert_exactly_once(scenario.sim, scenario.ids)
    assert all(not f.exists() or f.read_text() == "" for f in scenario.failures)
    assert all(json.loads(line)["action"] == "created" for line in scenario.results[0].stdout.splitlines())
