"""Flow control through the console script on real sockets: 429s, waits, tokens, an unreachable Station.

Issue 8 (a 429 is flow control; Station unreachable at start is exit 1 with every finding listed)
and issue 11 items 8 (a spent-quota 429 pauses nobody; Ctrl-C ends any wait) and 9 (bounded token
refresh, shared and paced token calls). The rate properties themselves are in test_pacing.py
(scripted clock) and test_rate_properties.py (real time).
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from gdtrustar.errors import DeadlineExceededError
from gdtrustar.mapper import build_report
from gdtrustar.pacing import Backoff, Pacer
from gdtrustar.settings import Settings
from gdtrustar.station import StationClient, UpsertSupport
from tests.conftest import write_jsonl
from tests.sims.guardduty import GuardDutyEmulator, make_finding
from tests.test_send import assert_exactly_once, events


def free_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- Station unreachable at start: exit 1, nothing lost ------------------------------------------------
@pytest.mark.parametrize("how", ["refused", "dns", "drops", "5xx", "expired-tokens"])
def test_station_unreachable_at_start_is_exit_1_with_all_of_stdin_in_the_failures_file(cli, sim, tmp_path, how):
    docs = events(12, start=300)
    failures = tmp_path / "failures.jsonl"
    cli.station(sim)
    if how == "refused":
        cli.env["TRUSTAR_API_ENDPOINT"] = f"http://127.0.0.1:{free_port()}/api/1.3"
        cli.env["TRUSTAR_AUTH_ENDPOINT"] = f"http://127.0.0.1:{free_port()}/oauth/token"
    elif how == "dns":
        cli.env["TRUSTAR_API_ENDPOINT"] = "https://gdtrustar-no-such-host.invalid/api/1.3"
        cli.env["TRUSTAR_AUTH_ENDPOINT"] = "https://gdtrustar-no-such-host.invalid/oauth/token"
    elif how == "drops":
        sim.outage(mode="drop")
    elif how == "5xx":
        sim.outage(status=503)
    else:  # every token is refused as expired the moment it is issued: the SDK alone would loop forever
        sim.token_ttl = 0
    stdin = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    result = cli("send", "--json", "--failures", str(failures), "-", input=stdin)
    assert result.code == 1, result.stderr
    assert "Station unreachable at start" in result.stderr and "Traceback" not in result.stderr
    assert result.actions() == {"failed": 12}
    assert sorted(r["finding"]["id"] for r in lines(failures)) == sorted(d["detail"]["id"] for d in docs)
    if how == "expired-tokens":
        assert sim.count("token") <= 3 * 6, "at most 2 refreshes per call, 6 attempts"
    # Station is back: the failures file replays every finding read from stdin
    sim.clear_faults()
    sim.token_ttl = 600
    cli.station(sim)
    replay = cli("send", "--json", "--failures", str(failures), str(failures))
    assert replay.code == 0, replay.stderr
    assert replay.actions() == {"created": 12}
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])


def test_unchanged_findings_stay_unchanged_when_station_is_unreachable_but_the_run_exits_1(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(3))
    assert cli.station(sim)("send", str(path)).code == 0
    sim.outage(mode="drop")
    result = cli("send", "--json", str(path))
    assert result.code == 1 and result.actions() == {"unchanged": 3}
    assert "Station unreachable at start" in result.stderr


@pytest.mark.parametrize("setting,value,words", [
    ("TRUSTAR_API_SECRET", "wrong-secret", "TRUSTAR_API_SECRET"),
    ("TRUSTAR_ENCLAVE_IDS", "enc-ro", "cannot create"),
    ("TRUSTAR_API_ENDPOINT", "https://127.0.0.1:99999/api/1.3", "malformed"),  # no such port
])
def test_what_the_user_must_fix_stays_exit_2(cli, sim, tmp_path, setting, value, words):
    path = write_jsonl(tmp_path / "e.jsonl", events(2))
    result = cli.station(sim)("send", str(path), env={setting: value})
    assert result.code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    assert sim.count("upsert") == 0


def test_backfill_stops_early_when_station_is_unreachable_and_resumes_later(cli, sim, tmp_path):
    with GuardDutyEmulator() as gd:
        det = gd.add_detector("us-east-1")
        findings = [make_finding(i, detector_id=det) for i in range(20)]
        gd.add_findings("us-east-1", det, findings)
        cli.station(sim)
        cli.env["AWS_ENDPOINT_URL_GUARDDUTY"] = gd.url
        sim.outage(mode="drop")
        result = cli("backfill", "--region", "us-east-1", "--json")
        assert result.code == 1, result.stderr
        assert "Station unreachable at start" in result.stderr and "backfill stopped" in result.stderr
        assert gd.count("ListFindings") == 0 and result.records == []
        sim.outage(0)
        again = cli("backfill", "--region", "us-east-1", "--json")
        assert again.code == 0, again.stderr
        assert again.actions() == {"created": 20}
    assert_exactly_once(sim, [f["id"] for f in findings])


# -- 429s: flow control, not attempts; a spent quota pauses nobody; Ctrl-C ends any wait -----------------
def test_429s_do_not_use_up_a_findings_attempts(cli, sim, tmp_path):
    docs = events(3)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    sim.storm_429(9, wait_ms=5, kinds={"upsert"})  # nine 429s in a row, with two attempts per finding
    result = cli.station(sim)("send", "--json", "--concurrency", "1", str(path),
                              env={"GDTRUSTAR_RETRY_ATTEMPTS": "2"})
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 3}
    assert sim.count("upsert", 429) == 9
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])


def test_a_spent_quota_429_fails_only_its_finding_and_pauses_nobody(cli, sim, tmp_path):
    docs = events(6)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    failures = tmp_path / "failures.jsonl"
    sim.storm_429(1, wait_ms=10 * 3600 * 1000, kinds={"upsert"})  # "come back in ten hours"
    result = cli.station(sim)("send", "--json", "--concurrency", "1", "--failures", str(failures), str(path))
    assert result.code == 1, result.stderr
    assert result.actions() == {"failed": 1, "created": 5}
    [failed] = lines(failures)
    assert "429" in failed["failure"]["error"] and failed["finding"]["id"] == docs[0]["detail"]["id"]


def test_ctrl_c_ends_a_long_429_pause_at_once(cli, sim, tmp_path):
    docs = events(5)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    failures = tmp_path / "failures.jsonl"
    holder: dict = {}
    sim.storm_429(1, wait_ms=250_000, kinds={"upsert"})  # under the spent-quota limit: everyone pauses 250 s
    sim.after(0, "upsert", lambda: holder["proc"].send_signal(signal.SIGINT))  # Ctrl-C as that 429 is served
    cli.station(sim)
    holder["proc"] = proc = cli.popen("send", "--json", "--concurrency", "1", "--failures", str(failures), str(path))
    out, err = proc.communicate(timeout=60)  # a hang guard: the pause alone would take 250 s
    assert proc.returncode == 130, err.decode()
    records = [json.loads(x) for x in out.decode().split("\n") if x]
    assert records and {r["action"] for r in records} == {"failed"}  # nothing sent after the 429
    assert any("interrupted while waiting" in r["error"] for r in records)
    assert len(lines(failures)) == len(records)
    assert sim.count("upsert") == 1


def test_a_deadline_ends_any_wait_before_it_without_sleeping(sim):
    """The Lambda's interface: ``StationClient.deadline`` (monotonic); no wait may end after it."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if seconds > 1:
            raise AssertionError(f"slept {seconds:.0f}s although the deadline was 5 s away")

    settings = Settings(api_key="test-key", api_secret="test-secret", enclave_ids=("enc-a",),
                        api_endpoint=sim.api_endpoint, auth_endpoint=sim.auth_endpoint, max_rate=600_000)

    def client(backoff: Backoff) -> StationClient:
        made = StationClient(settings, Pacer(600_000, sleep=sleep), UpsertSupport(), backoff, sleep)
        made.deadline = time.monotonic() + 5
        return made

    report = build_report(make_finding(1), "enc-a")
    sim.storm_429(1, wait_ms=60_000, kinds={"upsert"})
    with pytest.raises(DeadlineExceededError, match="429"):
        client(Backoff()).write(report)
    sim.fail_next(1, 503, kinds={"upsert"})
    with pytest.raises(DeadlineExceededError, match="503"):
        client(Backoff(base=30, cap=30, rand=lambda: 1.0)).write(report)
    assert slept == []
    assert client(Backoff()).write(report).existed is False
    assert sim.count("upsert") == 3


# -- OAuth tokens: shared, paced, refreshed at most twice per call ---------------------------------------
def test_workers_share_one_token_and_refresh_it_once(cli, sim, tmp_path):
    docs = events(40)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    sim.after(20, "upsert", sim.expire_tokens)
    result = cli.station(sim)("send", "--json", "--concurrency", "8", str(path))
    assert result.code == 0, result.stderr
    assert sim.count("token") == 2  # one for the run, one after Station expired it (not one per thread)
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])


def test_tokens_refused_mid_run_fail_findings_clearly_without_hanging(cli, sim, tmp_path):
    docs = events(30)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    failures = tmp_path / "failures.jsonl"

    def zero_ttl() -> None:  # a Station whose every new token is already expired
        sim.token_ttl = 0
        sim.expire_tokens()

    sim.after(5, "upsert", zero_ttl)
    result = cli.station(sim)("send", "--json", "--concurrency", "2", "--failures", str(failures), str(path),
                              env={"GDTRUSTAR_RETRY_ATTEMPTS": "2"})
    assert result.code == 1, result.stderr
    failed = [r for r in result.records if r["action"] == "failed"]
    assert failed and all("refused 3 fresh OAuth tokens" in r["error"] or "not attempted" in r["error"]
                          for r in failed)
    assert len(lines(failures)) == len(failed) == 30 - result.actions().get("created", 0)
    assert sim.count("token") <= 1 + 3 * 2 * 30  # bounded: at most 3 tokens per attempt
