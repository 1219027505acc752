"""Backfill: every existing finding of each detector through the shared delivery engine.

Per detector: count (for the progress total) → pages of 50 findings, prefetched one ahead →
engine → at each page end ``flush`` (in-flight writes finish, ledger committed) → at the end,
the bookmark.

The bookmark is the highest ``updatedAt`` the detector's listing returned, capped by the run's
start minus a clock-skew margin (the signpost), stored per (Station, enclaves, region, detector,
filter), and written only when every finding of the detector was delivered. The next run asks
GuardDuty only for findings updated at or after it (≥, so equal timestamps are re-read and the
ledger skips them). It is not moved per page because ListFindings' sort by ``updatedAt`` is
unconfirmed (api-facts B3): were it ignored, a per-page bookmark could skip an undelivered older
finding after a crash. The ledger is still committed per page, so a crash (even SIGKILL) loses
at most the page in flight, and the rerun's re-reads cost no Station call.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from gdtrustar.app import Run
from gdtrustar.errors import ConfigError
from gdtrustar.guardduty import Criteria, Target, count, pages, prefetch
from gdtrustar.items import Item, build_item

# GuardDuty's clock and eventual consistency vs ours: the bookmark stays this far behind our start.
SKEW = 15 * 60


def backfill(run: Run, targets: list[Target], criteria: Criteria, use_bookmarks: bool) -> None:
    """Deliver every matching finding of every target; Ctrl-C finishes the page in flight."""
    signpost = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - SKEW))
    scope = f"{run.ledger.station if run.ledger else ''}|{','.join(run.engine.enclave_ids)}"
    plans = [(t, f"{scope}|{t.region}|{t.detector_id}|{criteria.key()}", None) for t in targets]
    if use_bookmarks and run.ledger is not None:
        plans = [(t, key, run.ledger.get_bookmark(key)) for t, key, _ in plans]
    wire = [(t, key, criteria.finding_criteria(_ms(mark))) for t, key, mark in plans]
    totals = [count(t, c) for t, _, c in wire]
    run.reporter.set_total(None if None in totals else sum(totals), "backfill")
    with run.graceful_interrupt():
        try:
            for target, key, wire_criteria in wire:
                if run.engine.stopping:
                    break
                _one_detector(run, target, key, wire_criteria, signpost)
        except KeyboardInterrupt:  # the second Ctrl-C
            run.engine.request_stop()


def _one_detector(run: Run, target: Target, key: str, wire_criteria: dict, signpost: str) -> None:
    stop = threading.Event()
    clean, newest = True, ""
    run.reporter.describe(target.label)
    try:
        for page in prefetch(pages(target, wire_criteria), stop):
            problems_before = run.engine.summary.problems
            for raw in page:
                if run.engine.stopping:
                    break
                item = _item(target, raw)
                newest = max(newest, (item.finding or {}).get("updatedAt", ""))
                run.engine.submit(item)
            run.engine.flush()  # a checkpoint: in-flight writes done, ledger committed
            clean = clean and run.engine.summary.problems == problems_before
    finally:
        stop.set()
    if clean and newest and run.ledger is not None and not run.engine.summary.interrupted:
        run.ledger.set_bookmark(key, min(newest, signpost))
        run.ledger.commit()


def _item(target: Target, raw: Any) -> Item:
    """The same never-raising item builder ``send`` uses: a hostile finding is invalid, the run goes on."""
    finding_id = raw.get("Id", "?") if isinstance(raw, dict) else "?"
    return build_item(f"guardduty:{target.label}:{finding_id}", raw)


def _ms(iso: Optional[str]) -> Optional[int]:
    if not iso:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def build_session(profile: Optional[str]) -> Any:
    """A boto3 session; ``AWS_ENDPOINT_URL*`` variables are honoured by boto3 itself."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile) if profile else boto3.Session()
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise ConfigError(str(exc)) from exc

