"""Core benchmark (issue "core"): mapper throughput, Station calls per finding, share of quota, send vs old flow.

Run from the repo root: ``python benchmarks/bench_core.py [--findings 300]``. Everything runs against the
Station simulator on 127.0.0.1 at 50 ms latency and 600 calls per 60 s sliding window.

(a) normalize + build_report findings/s on one core, beside json.dumps of the same findings (baseline);
(b) Station calls per finding for new, changed (updatedAt bumped) and unchanged findings, from the sim's log;
(c) achieved write rate as a share of the quota, and 429s;
(d) wall time of ``gdtrustar send`` vs the original TruSTAR Lambda's per-event flow (SDK 0.4.3: enclave check,
    look-up by external id, submit or update, one finding at a time, the SDK's own 429 sleeping).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    FINDING_KINDS,
    SAMPLES,
    duplicates,
    pct,
    rate_share,
    run_cli,
    station_env,
    table,
)

from tests.sims.guardduty import make_finding, to_eventbridge  # noqa: E402
from tests.sims.station import StationSim  # noqa: E402

QUOTA, WINDOW, LATENCY = 600, 60.0, 0.05
TYPES = ("Recon:EC2/PortProbeUnprotectedPort", "Backdoor:EC2/C&CActivity.B", "UnauthorizedAccess:EC2/SSHBruteForce")


# -- (a) mapper ---------------------------------------------------------------------------------------
def sample_candidates() -> list:
    from gdtrustar.errors import NotAFindingError
    from gdtrustar.findings import explode, normalize
    from gdtrustar.sources import iter_documents

    out = []
    for doc in iter_documents([str(SAMPLES)]):
        for _, candidate in explode(doc.value) if doc.error is None else ():
            try:
                normalize(candidate)  # only findings (an invalid sample is a bug: it raises here)
            except NotAFindingError:  # the Malware Protection scan result sample
                continue
            out.append(candidate)
    return out


def per_second(func, items: list, min_seconds: float = 2.0) -> float:
    """Items per second of ``func`` over ``items``, repeated for at least ``min_seconds``."""
    done, started = 0, time.perf_counter()
    while True:
        for item in items:
            func(item)
        done += len(items)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def bench_mapper() -> list[tuple]:
    from gdtrustar.findings import normalize
    from gdtrustar.mapper import build_report

    def mapped(candidate):
        return build_report(normalize(candidate), "enc-a")

    sets = {
        "sample_events/ (19 findings)": sample_candidates(),
        "generated (2,000, EventBridge)": [to_eventbridge(make_finding(i, type=TYPES[i % 3])) for i in range(2000)],
    }
    rows = []
    for name, items in sets.items():
        ours = per_second(mapped, items)
        base = per_second(json.dumps, items)
        verdict = "PASS" if ours >= 5000 else "FAIL"
        rows.append((name, f"{ours:,.0f}/s", f"{base:,.0f}/s", f"{base / ours:.1f}x", verdict))
    return rows


# -- (b)(c)(d) Station ---------------------------------------------------------------------------------
def write_events(path: Path, n: int, minutes_later: int = 0) -> Path:
    from datetime import datetime, timedelta, timezone

    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with open(path, "w") as fh:
        for i in range(n):
            updated = base + timedelta(minutes=i + minutes_later)
            fh.write(json.dumps(to_eventbridge(make_finding(i, type=TYPES[i % 3], updated_at=updated))) + "\n")
    return path


def per_kind(calls: list) -> dict:
    out: dict = {}
    for call in calls:
        out[call.kind] = out.get(call.kind, 0) + 1
    return out


def measure(sim: StationSim, run) -> dict:
    """Run ``run()`` against a fresh quota window and turn the sim's call log into figures."""
    sim.quota_per_minute = QUOTA  # the setter empties the sliding window
    sim.clear_calls()
    started = time.monotonic()
    result = run()
    seconds = time.monotonic() - started
    calls = [c for c in sim.calls if c.kind != "token"]
    return {"seconds": seconds, "kinds": per_kind(calls), "429": sum(c.status == 429 for c in calls), "calls": calls,
            "rate": rate_share([c.time for c in calls], QUOTA, WINDOW), "result": result}


def ours(sim: StationSim, tmp: Path, events: Path, name: str):
    env = station_env(tmp, sim, QUOTA)
    run = run_cli(["send", "--json", "--state", str(tmp / "ledger.sqlite3"), str(events)], env, tmp, name)
    if run.code != 0:
        raise SystemExit(f"gdtrustar send failed ({run.code}): {run.stderr[-2000:]}")
    return run.actions()


def old_flow(sim: StationSim, events: Path) -> dict:
    """The original TruSTAR Lambda, one event at a time, as it used SDK 0.4.3 (warm container: one client)."""
    import requests
    from trustar import Report, TruStar

    from gdtrustar.findings import normalize
    from gdtrustar.mapper import build_report

    ts = TruStar(config={"user_api_key": "test-key", "user_api_secret": "test-secret",
                         "auth_endpoint": sim.auth_endpoint, "api_endpoint": sim.api_endpoint,
                         "enclave_ids": ["enc-a"], "client_metatag": "old-guardduty-lambda"})
    counts = {"created": 0, "updated": 0}
    with open(events) as fh:
        for line in fh:
            mine = build_report(normalize(json.loads(line)), "enc-a")  # same payload as ours
            enclaves = {e.id: e for e in ts.get_user_enclaves()}
            if not enclaves["enc-a"].create:
                raise SystemExit("old flow: enclave not writable")
            report = Report(title=mine.title, body=mine.body, time_began=mine.time_began,
                            external_id=mine.external_id, external_url=mine.external_url, enclave_ids=["enc-a"])
            try:
                existing = ts.get_report_details(mine.external_id, id_type="external")
            except requests.HTTPError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
                existing = None
            if existing is None:
                ts.submit_report(report)
                counts["created"] += 1
            else:
                report.id = existing.id
                ts.update_report(report)
                counts["updated"] += 1
    return counts


def calls_per_finding(m: dict, n: int) -> str:
    k = m["kinds"]
    return f"{sum(k.get(x, 0) for x in FINDING_KINDS) / n:.2f}"


def all_per_finding(m: dict, n: int) -> str:
    return f"{sum(m['kinds'].values()) / n:.2f}"


def findings_per_window(m: dict) -> float:
    """Findings per full quota window: the most API calls in any 60 s window / API calls per finding."""
    calls = m["calls"]
    best = rate_share([c.time for c in calls], QUOTA, WINDOW)["max_window"]
    written = sum(c.kind in ("upsert", "submit") and c.status < 300 for c in calls)
    return best * QUOTA * written / len(calls) if best is not None and written else float("nan")


def kinds_text(m: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(m["kinds"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=600,
                        help="findings per Station run (default 600: ~5 min in all; 300: ~2.5 min)")
    parser.add_argument("--skip-old", action="store_true", help="skip the old-flow run (about 170 s at 600)")
    args = parser.parse_args()
    n = args.findings
    t0 = time.monotonic()

    print("(a) mapper: normalize + build_report on one core; baseline json.dumps of the same findings")
    print(table(bench_mapper(), ("findings", "mapper", "json.dumps", "mapper cost in json.dumps", "goal >=5,000/s")))

    with tempfile.TemporaryDirectory(prefix="bench-core-") as name, \
            StationSim(latency=LATENCY, quota_per_minute=QUOTA, window_seconds=WINDOW) as sim:
        tmp = Path(name)
        new_file = write_events(tmp / "new.jsonl", n)
        changed_file = write_events(tmp / "changed.jsonl", n, minutes_later=1)
        new = measure(sim, lambda: ours(sim, tmp, new_file, "new"))
        same = measure(sim, lambda: ours(sim, tmp, new_file, "unchanged"))
        changed = measure(sim, lambda: ours(sim, tmp, changed_file, "changed"))
        dups = duplicates(sim)

    print(f"\n(b) Station calls per finding, gdtrustar send, {n} findings, ledger on (goal 1 / 1 / 0)")
    rows = [(label, calls_per_finding(m, n), m["kinds"].get("enclaves", 0), kinds_text(m), m["result"])
            for label, m in (("new", new), ("changed", changed), ("unchanged", same))]
    print(table(rows, ("findings", "calls/finding", "enclave checks", "calls by kind", "actions")))
    print(f"duplicates in Station after all three runs: {dups} (goal 0)")

    rate = new["rate"]
    print(f"\n(c) share of quota, run of {n} new findings ({rate['span_s']:.1f} s of calls):")
    print(f"calls in whole {WINDOW:.0f} s windows: {pct(rate['steady'])} of {QUOTA}/min (goal >=95%); "
          f"most calls in any {WINDOW:.0f} s window: {pct(rate['max_window'])} of quota (must stay <= 100%)"
          f"{'' if rate['max_window'] is not None else ' (run shorter than one window)'}; "
          f"429s new/changed/unchanged: {new['429']}/{changed['429']}/{same['429']} (goal 0)")

    if not args.skip_old:
        with tempfile.TemporaryDirectory(prefix="bench-core-old-") as name, \
                StationSim(latency=LATENCY, quota_per_minute=QUOTA, window_seconds=WINDOW) as sim:
            events = write_events(Path(name) / "new.jsonl", n)
            old = measure(sim, lambda: old_flow(sim, events))
            old_dups = duplicates(sim)
        print(f"\n(d) wall time, {n} new findings, same sim and quota ({QUOTA}/min, {LATENCY * 1000:.0f} ms latency)")
        rows = [("gdtrustar send (subprocess, incl. start-up)", f"{new['seconds']:.1f} s", all_per_finding(new, n),
                 new["429"], kinds_text(new)),
                ("old Lambda flow (SDK 0.4.3, in-process)", f"{old['seconds']:.1f} s", all_per_finding(old, n),
                 old["429"], kinds_text(old))]
        print(table(rows, ("flow", "wall", "API calls/finding (all kinds)", "429s", "calls by kind")))
        speedup = old["seconds"] / new["seconds"]
        print(f"speed-up (wall): {speedup:.2f}x (goal >=2.5x) {'PASS' if speedup >= 2.5 else 'FAIL'}; "
              f"old flow duplicates: {old_dups}")
        ours_rate, old_rate = findings_per_window(new), findings_per_window(old)
        if ours_rate == ours_rate and old_rate == old_rate:  # not NaN: both runs spanned a full window
            print(f"findings per full {WINDOW:.0f} s quota window: ours {ours_rate:.0f}, old {old_rate:.0f} "
                  f"({ours_rate / old_rate:.2f}x): the ratio long runs tend to.")
        else:
            print(f"findings per full {WINDOW:.0f} s window: n/a (our run fit in one window: the pacer spent the "
                  f"budget at once)")
    print(f"\ntotal benchmark time {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
