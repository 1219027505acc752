"""Backfill benchmark (issue "backfill"): dry-run speed and memory, live share of quota, rerun writes.

Run from the repo root: ``python benchmarks/bench_backfill.py [--findings 2000] [--dry-run-findings 20000]``.
The default live run (2,000 findings at 582 calls/min) takes about 3.5 minutes; ``--findings 300`` takes ~35 s.

(a) ``gdtrustar backfill --dry-run --json`` of 20,000 findings from the GuardDuty emulator: findings/s and the
    CLI's peak RSS, beside the same at a tenth of the size (goal: flat, within 30 MB);
(b) a live backfill of N new findings into the Station simulator (50 ms latency, 600 calls/min): Station calls
    per finding, share of quota, 429s, duplicates, and GuardDuty calls vs ceil(N/50);
(c) the same backfill again: Station writes (goal 0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    FINDING_KINDS,
    WRITE_KINDS,
    base_env,
    duplicates,
    gd_pages,
    mb,
    pct,
    rate_share,
    rss_summary,
    run_cli,
    station_env,
    table,
)

from tests.sims.guardduty import (
    GuardDutyEmulator,  # noqa: E402
    make_finding,  # noqa: E402
)
from tests.sims.station import StationSim  # noqa: E402

QUOTA, WINDOW, LATENCY, REGION = 600, 60.0, 0.05, "us-east-1"
GD_OPS = ("GetFindingsStatistics", "ListFindings", "GetFindings")


def add_detector(emu: GuardDutyEmulator, n: int) -> str:
    detector = emu.add_detector(REGION)
    emu.add_findings(REGION, detector, (make_finding(i, detector_id=detector) for i in range(n)))
    return detector


def gd_counts(emu: GuardDutyEmulator) -> dict:
    return {op: emu.count(op) for op in GD_OPS}


def gd_delta(before: dict, after: dict) -> dict:
    return {op: after[op] - before[op] for op in GD_OPS}


def backfill_args(detector: str, *extra: str) -> list[str]:
    return ["backfill", "--json", "--region", REGION, "--detector", detector, *extra]


def dry_run(emu: GuardDutyEmulator, tmp: Path, n: int) -> dict:
    detector = add_detector(emu, n)
    env = {**base_env(tmp), "AWS_ENDPOINT_URL_GUARDDUTY": emu.url}
    run = run_cli(backfill_args(detector, "--dry-run"), env, tmp, f"dry-{n}")
    actions = run.actions()
    run.stdout.unlink()
    if run.code != 0 or actions.get("dry-run") != n:
        raise SystemExit(f"dry run of {n} failed ({run.code}, {actions}): {run.stderr[-2000:]}")
    return {"n": n, "seconds": run.seconds, "peak_rss_kb": run.peak_rss_kb, "rss": rss_summary(run.samples)}


def live(sim: StationSim, emu: GuardDutyEmulator, tmp: Path, detector: str, name: str) -> dict:
    sim.quota_per_minute = QUOTA  # the setter empties the sliding window
    sim.clear_calls()
    before = gd_counts(emu)
    env = station_env(tmp, sim, QUOTA, AWS_ENDPOINT_URL_GUARDDUTY=emu.url)
    run = run_cli(backfill_args(detector, "--state", str(tmp / "ledger.sqlite3")), env, tmp, name)
    if run.code != 0:
        raise SystemExit(f"live backfill failed ({run.code}): {run.stderr[-2000:]}")
    calls = [c for c in sim.calls if c.kind != "token"]
    return {"seconds": run.seconds, "actions": run.actions(), "calls": calls, "gd": gd_delta(before, gd_counts(emu)),
            "peak_rss_kb": run.peak_rss_kb}


def count_kinds(calls: list, kinds) -> int:
    return sum(c.kind in kinds for c in calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=2000, help="live backfill size (default 2000, ~3.5 min)")
    parser.add_argument("--dry-run-findings", type=int, default=20000,
                        help="dry-run size (default 20000); also run at a tenth of it for the RSS comparison")
    args = parser.parse_args()
    n, big = args.findings, args.dry_run_findings
    t0 = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as name, GuardDutyEmulator() as emu:
        tmp = Path(name)
        small_run, big_run = dry_run(emu, tmp, big // 10), dry_run(emu, tmp, big)
        print("(a) gdtrustar backfill --dry-run --json from the GuardDuty emulator (one CLI process each)")
        rows = [(f"{r['n']:,}", f"{r['seconds']:.1f} s", f"{r['n'] / r['seconds']:,.0f}/s", mb(r["peak_rss_kb"]),
                 f"{r['rss']['start']:.0f} / {r['rss']['end']:.0f} MB") for r in (small_run, big_run)]
        print(table(rows, ("findings", "wall", "findings/s", "peak RSS (VmHWM)", "VmRSS at 1 s / last sample")))
        growth = (big_run["peak_rss_kb"] - small_run["peak_rss_kb"]) / 1024
        ratio = big_run["peak_rss_kb"] / small_run["peak_rss_kb"]
        print(f"peak RSS {big:,} vs {big // 10:,}: {growth:+.1f} MB (goal within 30 MB) "
              f"{'PASS' if abs(growth) <= 30 else 'FAIL'}; ratio {ratio:.2f}x "
              f"for {big / (big // 10):.0f}x the findings")

        detector = add_detector(emu, n)
        with StationSim(latency=LATENCY, quota_per_minute=QUOTA, window_seconds=WINDOW) as sim:
            first = live(sim, emu, tmp, detector, "live-1")
            dups = duplicates(sim)
            second = live(sim, emu, tmp, detector, "live-2")
            dups2 = duplicates(sim)

    rate = rate_share([c.time for c in first["calls"]], QUOTA, WINDOW)
    print(f"\n(b) live backfill of {n:,} new findings: Station sim {LATENCY * 1000:.0f} ms latency, {QUOTA} calls/min")
    print(f"wall {first['seconds']:.1f} s; actions {first['actions']}")
    print(f"Station calls per finding: {count_kinds(first['calls'], FINDING_KINDS) / n:.3f} (goal 1); "
          f"enclave checks: {count_kinds(first['calls'], ('enclaves',))}")
    print(f"share of quota: whole {WINDOW:.0f} s windows {pct(rate['steady'])}, "
          f"fullest window {pct(rate['max_window'])} "
          f"(goal >=95%); 429s: {sum(c.status == 429 for c in first['calls'])} (goal 0); duplicates: {dups} (goal 0)")
    print(f"GuardDuty calls: {first['gd']} (ceil(N/50) = {gd_pages(n)})")

    print(f"\n(c) same backfill again: wall {second['seconds']:.1f} s; actions {second['actions']}")
    print(f"Station writes: {count_kinds(second['calls'], WRITE_KINDS)} (goal 0); all Station API calls: "
          f"{len(second['calls'])}; duplicates: {dups2}; GuardDuty calls: {second['gd']}")
    print(f"\ntotal benchmark time {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
