"""The run's edges (issue 11, items 7 and 13): where the failures file goes, and how every run ends.

Nothing read may be lost: every finding ends delivered or listed in a failures file that ``gdtrustar
send`` replays, whichever way the run ends, and the run says where that file is.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GDTRUSTAR, Cli, Result, write_jsonl
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
    command = [GDTRUSTAR] if GDTRUSTAR else [sys.executable, "-m", "gdtrustar"]
    proc = subprocess.run([*command, *args], cwd=cwd, env={**cli.env, **(env or {})}, capture_output=True,
                          timeout=120, preexec_fn=_obey_file_modes)
    return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


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
