"""Pacing benchmark (issue 8): three server counting models x (steady, back to back, configured 100x too high).

Run from the repo root: ``python benchmarks/bench_pacing.py`` (about 10 minutes).

Each counting model of the Station simulator (fixed 60 s windows, a sliding 60 s window, a token
bucket refilled every second with a 1 s burst), 600 calls a minute, 50 ms latency, gets its own
simulators and runs in its own thread, so the three models are measured side by side:

* ours (``gdtrustar send`` as a subprocess, start-up included), one after another on one simulator:
  a steady run of N new findings at ``TRUSTAR_MAX_RATE=600``; two runs of N/2 back to back on one
  API key (the second with a second ledger); a run of N at ``TRUSTAR_MAX_RATE=60000``; and a short
  run of 300 at 600 (the figure even pacing costs);
* the old TruSTAR Lambda's flow (``bench_core.old_flow``: SDK 0.4.3, enclave check + look-up +
  submit per finding, the SDK's own 429 sleeping) on a second simulator of the same model, over N
  and then 300 findings, at the same time as ours.

Figures are computed from the simulators' call logs with ``tests/rates.py``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gdtrustar.sdk import quiet_sdk  # noqa: E402

quiet_sdk()  # the old flow's SDK would log JSON to stdout (importing gdtrustar.sdk already did this)

from _common import duplicates, pct, run_cli, station_env, table  # noqa: E402
from bench_core import old_flow, write_events  # noqa: E402

from tests import rates  # noqa: E402
from tests.sims.station import StationSim  # noqa: E402

QUOTA, LATENCY, MODELS, SHORT = 600, 0.05, ("fixed", "sliding", "bucket"), 300


def measure(sim: StationSim) -> dict:
    """Figures from the simulator's log since the last ``reset``."""
    calls = rates.sim_calls(sim)
    _, after = rates.after_congestion(calls, QUOTA, sim.rate_model)
    return {"share": rates.whole_minute_share([t for t, _ in calls], QUOTA), "after": after,
            "429": sum(1 for _, wait in calls if wait is not None), "busiest": rates.busiest([t for t, _ in calls]),
            "dups": duplicates(sim)}


def reset(sim: StationSim) -> None:
    sim.quota_per_minute = QUOTA  # a fresh counter: empty window, full bucket
    sim.clear_calls()


def ours(sim: StationSim, tmp: Path, label: str, runs: list) -> dict:
    """``runs``: (events file, max rate, ledger name); one after another, one state directory."""
    reset(sim)
    seconds, actions = 0.0, {}
    for number, (events, rate, ledger) in enumerate(runs):
        run = run_cli(["send", "--json", "--state", str(tmp / ledger), str(events)], station_env(tmp, sim, rate),
                      tmp, f"{label}-{number}")
        if run.code != 0:
            raise SystemExit(f"{label}: gdtrustar send exited {run.code}: {run.stderr[-2000:]}")
        seconds += run.seconds
        for action, count in run.actions().items():
            actions[action] = actions.get(action, 0) + count
    return {**measure(sim), "seconds": seconds, "actions": actions}


def old(sim: StationSim, events: Path) -> dict:
    reset(sim)
    started = time.monotonic()
    old_flow(sim, events)
    return {**measure(sim), "seconds": time.monotonic() - started}


def one_model(model: str, n: int, root: Path, out: dict) -> None:
    tmp = root / model
    tmp.mkdir()
    files = {k: write_events(tmp / f"{k}.jsonl", size) for k, size in
             (("all", n), ("short", SHORT))}
    halves = [write_events(tmp / "first-half.jsonl", n // 2)]
    halves.append(tmp / "second-half.jsonl")
    with open(files["all"]) as src, open(halves[1], "w") as dst:  # the other half of the same N findings
        dst.writelines(src.readlines()[n // 2:])
    with StationSim(latency=LATENCY, quota_per_minute=QUOTA, rate_model=model) as ours_sim, \
            StationSim(latency=LATENCY, quota_per_minute=QUOTA, rate_model=model) as old_sim:
        old_results: dict = {}

        def old_side() -> None:
            old_results["all"] = old(old_sim, files["all"])
            old_results["short"] = old(old_sim, files["short"])

        side = threading.Thread(target=old_side, name=f"old-{model}")
        side.start()
        cells = {}
        for label, runs in (
            ("steady", [(files["all"], QUOTA, "steady.sqlite3")]),
            ("back-to-back", [(halves[0], QUOTA, "one.sqlite3"), (halves[1], QUOTA, "two.sqlite3")]),
            ("too-high", [(files["all"], 100 * QUOTA, "high.sqlite3")]),
            ("short", [(files["short"], QUOTA, "short.sqlite3")]),
        ):
            (tmp / label).mkdir()
            cells[label] = ours(ours_sim, tmp / label, f"{model}-{label}", runs)
        side.join()
    out[model] = {"cells": cells, "old": old_results}


def rows(results: dict, n: int) -> list:
    out = []
    for model in MODELS:
        cells, old_runs = results[model]["cells"], results[model]["old"]
        for label, cell in cells.items():
            base = old_runs["short" if label == "short" else "all"]
            findings = SHORT if label == "short" else n
            out.append((model, label, findings, pct(cell["share"]), pct(cell["after"]), cell["429"],
                        pct(cell["busiest"] / QUOTA), f"{cell['seconds']:.1f} s", f"{base['seconds']:.1f} s",
                        base["429"], f"{base['seconds'] / cell['seconds']:.2f}x", cell["dups"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=1500,
                        help="N (default 1500: about 10 minutes in all; a too-high run under the sliding model "
                             "needs more than ~1,400 for a full minute 30 s after its first pause)")
    args = parser.parse_args()
    started = time.monotonic()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as name:
        threads = [threading.Thread(target=one_model, args=(m, args.findings, Path(name), results)) for m in MODELS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    missing = [m for m in MODELS if m not in results]
    if missing:
        raise SystemExit(f"models that did not finish: {missing}")
    print(f"Station simulator: {QUOTA} calls/min, {LATENCY * 1000:.0f} ms latency; ours = gdtrustar send "
          "(subprocess, start-up included); old = the original Lambda's flow (SDK 0.4.3, in-process)")
    print(table(rows(results, args.findings),
                ("model", "run", "findings", "share (whole min)", "after 1st 429 (worst min)", "429s",
                 "busiest 60 s", "ours wall", "old wall", "old 429s", "old/ours", "dups")))
    print(f"\ntotal benchmark time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
