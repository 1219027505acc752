"""Fault storms with accounting: one suite over the Station simulator and the GuardDuty emulator.

Each storm runs the CLI (in-process, from the tree) through one of two doors (``send`` from a JSON Lines file,
``backfill`` from the GuardDuty emulator through unmodified boto3) against the Station simulator with
faults injected. Afterwards, for every case:

* every finding has exactly one ``--json`` record, and the ``done:`` summary counts equal the records;
* every finding is in Station exactly once by external id, or listed in the failures file (0600);
* Station never holds a duplicate, and the report id we recorded is the one Station holds;
* replaying the failures file with ``gdtrustar send`` completes the set.

Faults that must start in the middle of a run are scheduled inside the simulator (``StationSim.after``:
"when the (K+1)-th upsert arrives, do X"), so they are deterministic: no sleeps, no timing races.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import re
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.conftest import Cli, Result, write_jsonl
from tests.sims.guardduty import GuardDutyEmulator, make_finding, to_eventbridge
from tests.sims.station import StationSim

ENCLAVE = "enc-a"
REGION = "us-east-1"
SUMMARY = re.compile(r"^gdtrustar: (done|interrupted): (\d+) findings in [\d.]+s \(\d+/s\): (.*?)"
                     r"(?:; (\d+) Station (?:writes|calls))?$", re.MULTILINE)


def ext(finding_id: str) -> str:
    return base64.b64encode(f"{ENCLAVE}|{finding_id}".encode()).decode()


def records_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.split("\n") if line.strip()]


@dataclass
class Summary:
    head: str
    findings: int
    counts: dict
    writes: int


def summary_of(stderr: str) -> Summary:
    found = SUMMARY.findall(stderr)
    assert len(found) == 1, stderr
    head, findings, counts, writes = found[0]  # a dry run has no call count
    parsed = {}
    if counts != "nothing":
        for part in counts.split(", "):
            number, action = part.split(" ", 1)
            parsed[action] = int(number)
    return Summary(head, int(findings), parsed, int(writes or 0))


@dataclass
class Storm:
    """One fault scenario: what to set up before the run, and what must hold afterwards."""

    name: str
    setup: Callable  # (sim, gd, run) -> None
    doors: tuple = ("send", "backfill")
    findings: int = 60
    env: dict = field(default_factory=dict)
    all_delivered: Optional[bool] = True  # None: either is fine, the accounting must still add up
    check: Optional[Callable] = None  # (sim, gd, records) -> None


def _upserts_by_fault(sim, fault):
    return sum(1 for call in sim.calls if call.kind == "upsert" and call.fault == fault)


STORMS = [
    Storm("429-storm-with-waitTime",
          lambda sim, gd, run: sim.storm_429(25, wait_ms=15, kinds={"upsert"}),
          check=lambda sim, gd, recs: (sim.count("upsert", 429) == 25) or pytest.fail("storm not served")),
    Storm("5pct-500s", lambda sim, gd, run: sim.random_faults(0.05, statuses=(500,), drop_share=0.0),
          check=lambda sim, gd, recs: sim.count(status=500) > 0 or pytest.fail("no 500 was injected")),
    Storm("30pct-500s-and-drops", lambda sim, gd, run: sim.random_faults(0.30, statuses=(500, 503), drop_share=0.25),
          all_delivered=None,
          check=lambda sim, gd, recs: sim.count(status=0) > 0 or pytest.fail("no connection was dropped")),
    Storm("dropped-connections", lambda sim, gd, run: sim.drop_next(15, kinds={"upsert"}),
          check=lambda sim, gd, recs: _upserts_by_fault(sim, "drop") == 15 or pytest.fail("drops not served")),
    Storm("lost-responses-after-write", lambda sim, gd, run: sim.lose_response_next(15, kinds={"upsert"}),
          check=lambda sim, gd, recs: _upserts_by_fault(sim, "lost_response") == 15 or pytest.fail("not lost")),
    Storm("token-expiry-mid-run",
          lambda sim, gd, run: sim.after(20, "upsert", sim.expire_tokens),
          check=lambda sim, gd, recs: (sim.count("token") >= 2 and any(
              c.status == 400 and c.kind == "upsert" for c in sim.calls)) or pytest.fail("no expiry seen")),
    Storm("short-outage-mid-run",  # 4 failing calls: fewer than the 6 attempts any finding gets
          lambda sim, gd, run: sim.after(20, "upsert", lambda: sim.outage(n_calls=4, status=503)),
          check=lambda sim, gd, recs: sim.count(status=503) == 4 or pytest.fail("outage not served")),
    Storm("long-outage-mid-run-errors",
          lambda sim, gd, run: sim.after(20, "upsert", lambda: sim.outage(status=503)),
          env={"GDTRUSTAR_RETRY_ATTEMPTS": "3"}, all_delivered=False,
          check=lambda sim, gd, recs: sum(r["action"] == "created" for r in recs) == 20 or pytest.fail(
              "exactly the 20 writes before the outage succeed")),
    Storm("long-outage-mid-run-drops",
          lambda sim, gd, run: sim.after(20, "upsert", lambda: sim.outage(mode="drop")),
          env={"GDTRUSTAR_RETRY_ATTEMPTS": "3"}, all_delivered=False,
          check=lambda sim, gd, recs: sum(r["action"] == "created" for r in recs) == 20 or pytest.fail(
              "exactly the 20 writes before the outage succeed")),
    Storm("guardduty-throttling-and-5xx",
          # botocore backs off rand(0, 2**attempt) s on throttling, so two throttles keep this case short
          lambda sim, gd, run: (gd.throttle_next(2), sim.fail_next(5, 502, kinds={"upsert"})),
          doors=("backfill",),
          check=lambda sim, gd, recs: (sum(c.status == 429 for c in gd.calls) == 2
                                       and sim.count("upsert", 502) == 5) or pytest.fail("faults not served")),
]


@pytest.fixture
def ssim():
    with StationSim() as station:
        yield station


@pytest.fixture
def gd():
    with GuardDutyEmulator() as emulator:
        yield emulator


@dataclass
class Door:
    """How findings enter a run: ``send`` a file or ``backfill`` from the emulator."""

    kind: str
    cli: Cli
    ids: list
    args: list

    def command(self, *extra: str) -> list:
        return [self.kind, "--json", *extra, *self.args]


def open_door(kind: str, cli: Cli, sim, gd, tmp_path: Path, n: int) -> Door:
    cli.station(sim, ENCLAVE)
    if kind == "send":
        events = [to_eventbridge(make_finding(i)) for i in range(n)]
        path = write_jsonl(tmp_path / "events.jsonl", events)
        return Door(kind, cli, [e["detail"]["id"] for e in events], [str(path)])
    cli.env["AWS_ENDPOINT_URL_GUARDDUTY"] = gd.url
    detector = gd.add_detector(REGION)
    findings = [make_finding(i, region=REGION, detector_id=detector) for i in range(n)]
    gd.add_findings(REGION, detector, findings)
    return Door(kind, cli, [f["id"] for f in findings], ["--region", REGION])


def check_accounting(result: Result, ids: list, failures: Path, sim, *, allowed=("created", "updated", "failed")):
    """The invariants every storm must leave behind; returns the ids listed as failed."""
    assert "Traceback" not in result.stderr
    records = records_of(result.stdout)
    per_id = collections.Counter(r["finding_id"] for r in records)
    assert set(per_id) == set(ids) and set(per_id.values()) == {1}, "one record per finding"
    actions = collections.Counter(r["action"] for r in records)
    assert set(actions) <= set(allowed), actions
    summary = summary_of(result.stderr)
    assert summary.head == "done"
    assert summary.findings == len(ids) == sum(summary.counts.values())
    assert summary.counts == dict(actions)
    failed = {r["finding_id"] for r in records if r["action"] == "failed"}
    assert result.code == (1 if failed else 0), result.stderr
    for record in records:
        assert (record["error"] is not None) == (record["action"] == "failed")
    # Station: no duplicates anywhere; each delivered finding exactly once, under the id we recorded
    by_ext = sim.reports_by_external_id()
    assert all(len(reports) == 1 for reports in by_ext.values()), "a finding was stored twice"
    for record in records:
        if record["action"] in ("created", "updated"):
            stored = by_ext.get((ENCLAVE, ext(record["finding_id"])), [])
            assert len(stored) == 1 and stored[0]["id"] == record["report_id"]
    delivered = {fid for (enclave, key), _ in by_ext.items() for fid in [base64.b64decode(key).decode()[6:]]}
    assert set(ids) <= delivered | failed, "every finding is in Station or in the failures file"
    # the failures file lists exactly the failed findings, privately
    lines = [json.loads(line) for line in failures.read_text().splitlines()] if failures.exists() else []
    assert sorted(line["failure"]["finding_id"] for line in lines) == sorted(failed)
    assert all(line["finding"]["id"] == line["failure"]["finding_id"] for line in lines)
    if failures.exists():
        assert stat.S_IMODE(os.stat(failures).st_mode) == 0o600
    if failed:
        assert f"{len(failed)} not delivered, listed in {failures}" in result.stderr
    # the summary's Station call count covers the calls of delivered findings (an attempt on a stale
    # pooled connection may never reach Station, so the simulator's log gives no upper bound)
    assert summary.writes >= actions["created"] + actions["updated"]
    return failed


def replay(cli: Cli, failures: Path, sim, tmp_path: Path, ids: list, failed: set) -> None:
    """Replay the failures file on a healthy Station: the set completes, nothing is duplicated."""
    sim.clear_faults()
    if failed:
        again = tmp_path / "failures-2.jsonl"
        result = cli("send", "--json", "--failures", str(again), str(failures))
        assert result.code == 0, result.stderr
        records = records_of(result.stdout)
        assert sorted(r["finding_id"] for r in records) == sorted(failed)
        assert {r["action"] for r in records} <= {"created", "updated"}
        assert summary_of(result.stderr).findings == len(failed)
        assert again.read_text() == ""
    else:  # nothing undelivered: the explicit failures file is written empty
        assert failures.read_text() == ""
    by_ext = sim.reports_by_external_id()
    assert all(len(reports) == 1 for reports in by_ext.values())
    assert all(len(by_ext.get((ENCLAVE, ext(fid)), [])) == 1 for fid in ids)
    assert len(by_ext) == len(ids)


CASES = [pytest.param(storm, door, id=f"{storm.name}-{door}") for storm in STORMS for door in storm.doors]


@pytest.mark.parametrize("storm, door_kind", CASES)
def test_storm(storm: Storm, door_kind: str, cli, ssim, gd, tmp_path):
    door = open_door(door_kind, cli, ssim, gd, tmp_path, storm.findings)
    storm.setup(ssim, gd, door)
    failures = tmp_path / "failures.jsonl"
    result = cli(*door.command("--failures", str(failures)), env=storm.env)
    failed = check_accounting(result, door.ids, failures, ssim)
    if storm.all_delivered is True:
        assert not failed, result.stderr
    elif storm.all_delivered is False:
        assert failed, "the outage outlasted the retry budget: some findings must be listed as failed"
    if storm.check:
        storm.check(ssim, gd, records_of(result.stdout))
    replay(cli, failures, ssim, tmp_path, door.ids, failed)


@pytest.mark.parametrize("door_kind", ["backfill", "send"])
def test_sigkill_mid_run_then_resume_completes_exactly_once(door_kind, cli, ssim, gd, tmp_path):
    door = open_door(door_kind, cli, ssim, gd, tmp_path, 100)
    holder: dict = {}
    # SIGKILL from inside Station the moment the 41st write arrives: that write is still applied,
    # but the client never hears of it (a lost response plus a crash)
    ssim.after(40, "upsert", lambda: os.kill(holder["proc"].pid, signal.SIGKILL))
    holder["proc"] = proc = cli.popen(*door.command("--concurrency", "2"))  # a real process, to be killed
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    before = len(ssim.reports)
    assert 40 <= before < 100
    assert len(records_of(out.decode())) <= 41
    failures = tmp_path / "failures.jsonl"
    result = cli(*door.command("--failures", str(failures)))
    records = records_of(result.stdout)
    # backfill resumes from its bookmark (earlier pages are not even read again); send re-reads the file
    # and the ledger turns what it knows into "unchanged"
    resumed = [r["finding_id"] for r in records]
    check_accounting(result, resumed, failures, ssim, allowed=("created", "updated", "unchanged"))
    if door_kind == "send":
        assert sorted(resumed) == sorted(door.ids)
    else:  # whatever the resume did not read again was delivered before the kill
        stored_before_resume = {r["finding_id"] for r in records if r["action"] == "unchanged"}
        assert set(door.ids) - set(resumed) <= set(door.ids) - stored_before_resume
    by_ext = ssim.reports_by_external_id()
    assert sorted(base64.b64decode(key).decode()[6:] for _, key in by_ext) == sorted(door.ids)
    assert all(len(reports) == 1 for reports in by_ext.values())
    replay(cli, failures, ssim, tmp_path, door.ids, set())


# --- replaying: bugs -----------------------------------------------------------------------------------------


def test_replaying_an_empty_failures_file_is_a_clean_no_op(cli, tmp_path):
    failures = tmp_path / "failures.jsonl"
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(i)) for i in range(3)])
    first = cli("send", "--dry-run", "--json", "--failures", str(failures), str(events))
    assert first.code == 0 and failures.read_text() == ""
    replay = cli("send", "--dry-run", "--json", "--failures", str(failures), str(failures))
    assert replay.code == 0, replay.stderr
    assert records_of(replay.stdout) == [] and failures.read_text() == ""


def test_replaying_a_failures_file_keeps_the_original_reason(cli, tmp_path):
    failures = tmp_path / "failures.jsonl"
    broken = tmp_path / "broken.json"
    broken.write_text('{"detail-type": "GuardDuty Finding", ')
    first = cli("send", "--dry-run", "--json", "--failures", str(failures), str(broken))
    assert first.code == 1
    reason = records_of(first.stdout)[0]["error"]
    replay = cli("send", "--dry-run", "--json", "--failures", str(failures), str(failures))
    assert [r["error"] for r in records_of(replay.stdout)] == [reason]
