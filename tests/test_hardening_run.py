"""The run's edges (issue 11, items 7 and 13): where the failures file goes, and how every run ends.

Nothing read may be lost: every finding ends delivered or listed in a failures file that ``gdtrustar
send`` replays, whichever way the run ends, and the run says where that file is.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shlex
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, Result, console_script, write_jsonl
from tests.sims.guardduty import make_finding, to_eventbridge

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def events(n: int, start: int = 0) -> list[dict]:
    return [to_eventbridge(make_finding(i)) for i in range(start, start + n)]


def _obey_file_modes() -> None:
    """In the child: as root, drop the capabilities that ignore file modes (as for any other user)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_in(cli: Cli, cwd: Path, *args: str, env: dict | None = None) -> Result:
    """The console script run from ``cwd`` by a user who must obey its mode (0555: not writable)."""
    return cli.subprocess(*args, env=env, cwd=cwd, preexec_fn=_obey_file_modes)


@pytest.fixture
def readonly_cwd(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    yield directory
    directory.chmod(0o755)


def _listed(path: Path) -> list[str]:
    return [json.loads(line)["failure"]["finding_id"] for line in path.read_text().splitlines() if line.strip()]


# --- 7. an unwritable working directory ---------------------------------------------------------------------


def test_unwritable_cwd_falls_back_to_the_state_directory_and_loses_nothing(cli, sim, tmp_path, readonly_cwd):
    docs = events(30)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    sim.after(5, "upsert", lambda: sim.fail_next(3, 400, kinds={"upsert"}))  # the 6th-8th writes fail
    result = run_in(cli.station(sim), readonly_cwd, "send", "--json", "--concurrency", "1", str(path))
    assert result.code == 1, result.stderr
    assert "unexpected" not in result.stderr
    assert result.actions() == {"created": 27, "failed": 3}
    state = tmp_path / "state" / "gdtrustar"
    (listed,) = state.glob("gdtrustar-failures-*.jsonl")
    assert sorted(_listed(listed)) == sorted(r["finding_id"] for r in result.records if r["action"] == "failed")
    assert f"listed in {listed}" in result.stderr and "working directory" in result.stderr
    assert list(readonly_cwd.iterdir()) == []
    replay = cli("send", "--json", str(listed))
    assert replay.code == 0, replay.stderr
    assert replay.actions() == {"created": 3}


def test_unwritable_cwd_and_state_directory_is_exit_2_before_anything_is_attempted(cli, sim, tmp_path, readonly_cwd):
    path = write_jsonl(tmp_path / "e.jsonl", events(3))
    state = tmp_path / "ro-state"
    state.mkdir(mode=0o555)
    for args in (["send", "--dry-run", "--json"], ["send", "--json"]):
        result = run_in(cli.station(sim), readonly_cwd, *args, str(path), env={"XDG_STATE_HOME": str(state)})
        assert result.code == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gdtrustar: error:") and "failures" in lines[0], lines
        assert str(readonly_cwd) in lines[0] and "--failures" in lines[0]
        assert result.stdout == ""
    assert sim.count("upsert") == 0
    state.chmod(0o755)


def test_an_unwritable_explicit_failures_file_is_exit_2_at_start(cli, sim, tmp_path, readonly_cwd):
    path = write_jsonl(tmp_path / "e.jsonl", events(3))
    result = run_in(cli.station(sim), readonly_cwd, "send", "--json", "--failures",
                    str(readonly_cwd / "f.jsonl"), str(path))
    assert result.code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "f.jsonl" in result.stderr
    assert sim.count("upsert") == 0 and result.stdout == ""


# --- 13. one boundary: every exit path finishes the run ------------------------------------------------------


def _private_failures(directory: Path) -> list[dict]:
    """The one failures file in ``directory`` (0600, no temporary left), as records."""
    assert not list(directory.rglob(".*.tmp")), "a temporary failures file was left behind"
    files = list(directory.glob("gdtrustar-failures-*.jsonl")) + list(directory.glob("failures.jsonl"))
    if not files:
        return []
    (path,) = files
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _nothing_read_was_lost(ids: list[str], delivered: set[str], listed: set[str]) -> int:
    """Every finding is delivered, listed, or in the unread tail of the input; returns the tail's length."""
    missing = [i for i, fid in enumerate(ids) if fid not in delivered and fid not in listed]
    assert missing == list(range(len(ids) - len(missing), len(ids))), "a finding that was read is neither " \
        "delivered nor listed"
    return len(missing)


def _stored(sim) -> set[str]:
    return {base64.b64decode(ext).decode().split("|", 1)[1] for (_, ext) in sim.reports_by_external_id()}


def test_a_closed_pipe_stops_quietly_and_loses_nothing_that_was_read(cli, sim, tmp_path):
    docs = events(300)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    reader, writer = os.pipe()
    sim.after(5, "upsert", lambda: os.close(reader))  # the reader goes away while the run is in full swing
    proc = cli.station(sim).popen("send", "--json", "--concurrency", "2", str(path), stdout=writer)
    os.close(writer)
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 141, stderr
    for word in ("Traceback", "unexpected", "Exception ignored", "BrokenPipe"):
        assert word not in stderr, stderr
    listed = _private_failures(tmp_path)
    ids = [d["detail"]["id"] for d in docs]
    unread = _nothing_read_was_lost(ids, _stored(sim), {r["finding"]["id"] for r in listed})
    assert unread > 0 and len(_stored(sim)) < 300, "the run stopped when its output went away"
    assert all("not attempted: output closed" in r["failure"]["error"] for r in listed)
    # the ledger was committed: a rerun skips every delivered finding and completes the set
    again = cli("send", "--json", str(path))
    assert again.code == 0, again.stderr
    assert again.actions() == {"unchanged": 300 - unread - len(listed), "created": unread + len(listed)}


def test_send_piped_into_head_exits_quietly(cli, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(2000))  # far more output than a pipe holds
    command = shlex.join(console_script())
    proc = subprocess.run(["bash", "-c", f'set -o pipefail; {command} send --dry-run --json "$1" | head -n 1',
                           "_", str(path)], cwd=tmp_path, env=cli.process_env(), capture_output=True, timeout=120)
    assert proc.returncode == 141, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    stderr = proc.stderr.decode()
    for word in ("Traceback", "unexpected", "Exception ignored", "BrokenPipe", "error"):
        assert word not in stderr, stderr
    assert not list(tmp_path.rglob(".*.tmp"))


def test_an_unexpected_error_is_exit_3_with_a_crash_log_and_nothing_read_is_lost(cli, sim, tmp_path):
    """A genuine failure mid-run: another process drops the ledger's table, so ours can no longer record."""
    docs = events(40)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    ledger = tmp_path / "ledger.sqlite3"
    intruder = []

    def write_to_the_ledger() -> None:
        conn = sqlite3.connect(str(ledger), timeout=0.1, isolation_level=None, check_same_thread=False)
        conn.execute("DROP TABLE deliveries")
        intruder.append(conn)

    sim.after(0, "upsert", write_to_the_ledger)  # before the first write lands: no batch can be recorded
    result = cli.station(sim)("send", "--json", "--concurrency", "2", "--state", str(ledger), str(path),
                              env={"TRUSTAR_API_SECRET": "test-secret"})
    assert result.code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gdtrustar: error:")]
    assert len(errors) == 1 and "unexpected OperationalError" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    (crash,) = (tmp_path / "state" / "gdtrustar").glob("crash-*.log")
    assert str(crash) in errors[0]
    assert stat.S_IMODE(crash.stat().st_mode) == 0o600
    text = crash.read_text()
    assert "Traceback" in text and "OperationalError" in text and "test-secret" not in text
    assert f"command: gdtrustar send --json --concurrency 2 --state {ledger}" in text
    listed = _private_failures(tmp_path)
    assert listed, result.stderr
    ids = [d["detail"]["id"] for d in docs]
    _nothing_read_was_lost(ids, _stored(sim), {r["finding"]["id"] for r in listed})
    for conn in intruder:
        conn.close()
    again = cli("send", "--json", "--state", str(ledger), str(path))
    assert again.code == 0, again.stderr
    assert _stored(sim) == set(ids) and all(len(v) == 1 for v in sim.reports_by_external_id().values())


@pytest.mark.parametrize("fault", ["throttle", "5xx"])
def test_transient_aws_errors_in_backfill_are_exit_1_not_a_configuration_error(cli, sim, tmp_path, fault):
    from tests.sims.guardduty import GuardDutyEmulator

    with GuardDutyEmulator() as gd:
        detector = gd.add_detector("us-east-1")
        gd.add_findings("us-east-1", detector, [make_finding(i, detector_id=detector) for i in range(120)])
        knob = (lambda: gd.throttle_next(1000)) if fault == "throttle" else (lambda: gd.fail_next(1000, 503))
        gd.after(1, "GetFindings", knob)  # the first page arrives; every later call fails
        cli.station(sim).env.update({"AWS_ENDPOINT_URL_GUARDDUTY": gd.url, "AWS_MAX_ATTEMPTS": "2"})
        result = cli("backfill", "--region", "us-east-1", "--json")
        at_start = cli("backfill", "--region", "us-east-1", "--json")  # ListDetectors fails too
    assert result.code == 1, result.stderr
    assert result.actions() == {"created": 50}
    errors = [line for line in result.stderr.splitlines() if line.startswith("gdtrustar: error:")]
    code = "ThrottlingException" if fault == "throttle" else "InternalServerErrorException"
    assert len(errors) == 1 and code in errors[0] and "unexpected" not in errors[0], result.stderr
    assert at_start.code == 1 and code in at_start.stderr, at_start.stderr
    assert not list(tmp_path.rglob(".*.tmp"))
