"""Shared benchmark helpers: simulators, the CLI's environment, running it with RSS sampling, rates.

Everything runs on 127.0.0.1. The CLI is always run as a subprocess (the installed console
script, resolved next to this interpreter so a pyenv shim does not add start-up time), with
stdout going to a file so a 50,000-record ``--json`` stream never sits in a pipe or in memory.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import base_env  # noqa: E402  -- one environment for tests and benchmarks

SAMPLES = ROOT / "sample_events"
WRITE_KINDS = ("upsert", "submit", "put")
FINDING_KINDS = ("upsert", "submit", "get", "put")
_SCRIPT = Path(sys.executable).with_name("gdtrustar")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [shutil.which("gdtrustar") or "gdtrustar"]


def station_env(tmp: Path, sim, max_rate: float, **extra: str) -> dict[str, str]:
    """Environment pointing the CLI at a StationSim, paced at ``max_rate`` calls per minute."""
    env = base_env(tmp)
    env.update({
        "TRUSTAR_API_ENDPOINT": sim.api_endpoint,
        "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint,
        "TRUSTAR_API_KEY": "test-key",
        "TRUSTAR_API_SECRET": "test-secret",
        "TRUSTAR_ENCLAVE_IDS": "enc-a",
        "TRUSTAR_MAX_RATE": str(max_rate),
    })
    env.update(extra)
    return env


@dataclass
class CliRun:
    """One finished CLI process."""

    code: int
    seconds: float
    stdout: Path
    stderr: str
    peak_rss_kb: int  # VmHWM (the kernel's RSS high-water mark of this process image), last read before exit
    samples: list = field(default_factory=list)  # (seconds since start, VmRSS kB), one a second

    def records(self) -> Iterator[dict]:
        with open(self.stdout, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def actions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records():
            counts[record["action"]] = counts.get(record["action"], 0) + 1
        return counts


def _memory_kb(pid: int) -> tuple[Optional[int], Optional[int]]:
    """(VmRSS, VmHWM) of a live process in kB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return found.get("VmRSS"), found.get("VmHWM")


def run_cli(args: Iterable[str], env: dict, cwd: Path, name: str, timeout: float = 1800,
            sample_every: float = 1.0) -> CliRun:
    """Run ``gdtrustar *args``; stdout to ``cwd/name.out``; sample VmRSS every ``sample_every`` s.

    Peak memory is the process's own VmHWM, polled every 0.1 s. Not ``ru_maxrss`` (getrusage
    RUSAGE_CHILDREN or wait4): Linux carries the high-water mark across exec, so it reports the
    *benchmark's* RSS at fork time (e.g. 165 MB with 20,000 findings loaded in the emulator) when
    that is larger than the CLI's own peak.
    """
    out = cwd / f"{name}.out"
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([*COMMAND, *args], stdout=stdout, stderr=subprocess.PIPE, cwd=cwd, env=env)
        samples: list = []
        hwm, next_sample = 0, started
        stderr_chunks: list = []
        reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
        reader.start()
        deadline = started + timeout
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now > deadline:
                proc.kill()
                raise TimeoutError(f"gdtrustar {' '.join(args)} took over {timeout} s")
            rss, high = _memory_kb(proc.pid)
            hwm = max(hwm, high or 0)
            if rss is not None and now >= next_sample:
                samples.append((now - started, rss))
                next_sample = now + sample_every
            time.sleep(0.1)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    stderr = b"".join(stderr_chunks).decode("utf-8", "replace")
    return CliRun(proc.returncode, seconds, out, stderr, hwm, samples)


# -- figures from the Station simulator's call log ------------------------------------------------

def rate_share(times: list[float], quota: float, window: float = 60.0) -> dict:
    """Achieved call rate as a share of the quota, from call timestamps.

    ``steady``: calls in the run's first k whole windows (k = span // window) over k × quota: the
    pacer spends its budget in bursts, so only whole windows say how much of it a run used.
    ``max_window``: the most calls in any sliding ``window`` over the quota (must stay <= 100%).
    Both need a run at least one window long.
    """
    times = sorted(times)
    n = len(times)
    out = {"calls": n, "steady": None, "max_window": None, "span_s": (times[-1] - times[0]) if n > 1 else 0.0}
    whole = int(out["span_s"] // window)
    if whole:
        used = bisect.bisect_left(times, times[0] + whole * window)
        out["steady"] = used / (whole * quota * window / 60.0)
        out["max_window"] = max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)) / (
            quota * window / 60.0)
    return out


def duplicates(sim) -> int:
    """Extra reports beyond one per (enclave, external id)."""
    return sum(len(v) - 1 for v in sim.reports_by_external_id().values())


def rss_summary(samples: list) -> dict:
    """Start (first sample after 1 s, i.e. after imports), peak, end (last sample) VmRSS in MB."""
    values = [kb for t, kb in samples if t >= 1.0] or [kb for _, kb in samples]
    if not values:
        return {"start": None, "peak": None, "end": None}
    return {"start": values[0] / 1024, "peak": max(values) / 1024, "end": values[-1] / 1024}


def gd_pages(n: int) -> int:
    return math.ceil(n / 50)


def pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def mb(kb: Optional[float]) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f} MB"


def table(rows: list[tuple], headers: tuple) -> str:
    """A plain fixed-width table."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
