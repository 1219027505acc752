"""Soak (issue "proof"): 50,000 findings through ``gdtrustar send`` with 5% random Station faults.

Run from the repo root: ``python benchmarks/soak.py [--findings 50000]``.

The Station simulator has no quota and no latency, and the CLI runs with a very high TRUSTAR_MAX_RATE, so the
run takes minutes. 5% of API calls fail (500/503, a quarter of them as dropped connections). The CLI retries
each write ``--retry-attempts`` times (default 2, GDTRUSTAR_RETRY_ATTEMPTS) so that some findings really do
end in the failures file; that file is then replayed (faults still on, at most ``--replays`` rounds) until
it is empty. Checks: no duplicates, nothing missing, and the CLI's VmRSS (sampled every second from
/proc/<pid>/status) flat from start to end.

The input is a .jsonl.gz of EventBridge events written on the fly (one event in memory at a time).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import duplicates, rss_summary, run_cli, station_env, table  # noqa: E402

from gdtrustar.mapper import external_id  # noqa: E402
from tests.sims.guardduty import make_finding, to_eventbridge  # noqa: E402
from tests.sims.station import StationSim  # noqa: E402

TYPES = ("Recon:EC2/PortProbeUnprotectedPort", "Backdoor:EC2/C&CActivity.B", "UnauthorizedAccess:EC2/SSHBruteForce")


def write_input(path: Path, n: int) -> set:
    """Stream ``n`` events to ``path`` (gzip); return the expected (enclave, external id) keys."""
    expected = set()
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for i in range(n):
            finding = make_finding(i, type=TYPES[i % 3])
            expected.add(("enc-a", external_id("enc-a", finding["id"])))
            fh.write(json.dumps(to_eventbridge(finding)) + "\n")
    return expected


def failure_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path) as fh:
        return sum(1 for line in fh if line.strip())


def growth_after_warmup(samples: list) -> float:
    """VmRSS growth (MB) from the sample at 10% of the run to the last sample."""
    if len(samples) < 3:
        return 0.0
    end_time = samples[-1][0]
    early = next(kb for t, kb in samples if t >= 0.1 * end_time)
    return (samples[-1][1] - early) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=50000, help="findings to send (default 50000)")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of API calls that fail (0.05)")
    parser.add_argument("--retry-attempts", type=int, default=2, help="GDTRUSTAR_RETRY_ATTEMPTS for the CLI (2)")
    parser.add_argument("--replays", type=int, default=5, help="most replays of the failures file (5)")
    args = parser.parse_args()
    n = args.findings
    t0 = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="soak-") as name, StationSim() as sim:
        tmp = Path(name)
        source = tmp / "findings.jsonl.gz"
        expected = write_input(source, n)
        print(f"input: {n:,} findings, {source.stat().st_size / 1e6:.1f} MB gzip, written in "
              f"{time.monotonic() - t0:.0f} s")
        sim.random_faults(args.fault_rate)
        env = station_env(tmp, sim, 6_000_000, GDTRUSTAR_RETRY_ATTEMPTS=str(args.retry_attempts))
        ledger, rows = str(tmp / "ledger.sqlite3"), []
        inputs, first = source, None
        for round_no in range(args.replays + 1):
            failures = tmp / f"failures-{round_no}.jsonl"
            run = run_cli(["send", "--json", "--state", ledger, "--failures", str(failures), str(inputs)],
                          env, tmp, f"run-{round_no}", timeout=3600)
            if run.code not in (0, 1):
                raise SystemExit(f"gdtrustar send exited {run.code}: {run.stderr[-2000:]}")
            actions = run.actions()
            run.stdout.unlink()
            left = failure_lines(failures)
            rss = rss_summary(run.samples)
            rows.append(("send" if round_no == 0 else f"replay {round_no}", f"{sum(actions.values()):,}",
                         json.dumps(actions), left, f"{run.seconds:.0f} s",
                         f"{rss['start']:.0f} / {rss['peak']:.0f} / {rss['end']:.0f} MB"))
            first = first or run
            if left == 0:
                break
            inputs = failures
        calls = sim.calls
        stored = sim.reports_by_external_id()
        dups = duplicates(sim)

    missing = len(expected - set(stored))
    extra = len(set(stored) - expected)
    print(table(rows, ("run", "records", "actions", "left in failures file", "wall", "VmRSS first/peak/last")))
    api = [c for c in calls if c.kind != "token"]
    faults = sum(c.fault == "random" for c in api)
    print(f"Station API calls: {len(api):,} ({faults:,} random faults = {faults / max(1, len(api)):.1%}); "
          f"first run {n / first.seconds:,.0f} findings/s")
    print(f"reports: {len(stored):,} distinct keys; duplicates {dups} (goal 0); missing {missing} (goal 0); "
          f"unexpected {extra}; failures left after replays: {left} (goal 0)")
    samples = first.samples
    warm = [kb for t, kb in samples if t >= 2.0] or [kb for _, kb in samples]
    print(f"first run VmRSS: at 2 s {warm[0] / 1024:.1f} MB, peak {max(warm) / 1024:.1f} MB, "
          f"end {warm[-1] / 1024:.1f} MB; growth from 10% of the run to the end "
          f"{growth_after_warmup(samples):+.1f} MB; "
          f"VmHWM {first.peak_rss_kb / 1024:.1f} MB")
    ok = dups == 0 and missing == 0 and left == 0
    print(f"{'PASS' if ok else 'FAIL'}; total soak time {time.monotonic() - t0:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
