"""Backfill: every existing finding of each detector through the shared delivery engine.

Per detector: count (for the progress total) → pages of 50 findings, prefetched one ahead →
engine → at each page end ``flush`` (in-flight writes finish, ledger committed) → at the end,
the bookmark.

The detector's listing is one ``Checkpoint`` (``checkpoint.py``, the mechanism the S3 export
shares): every finding is held in it, and it is sealed after the last page. Its acknowledgement
stores the bookmark, so the bookmark is written only when every finding of the detector was
delivered (created, updated, unchanged or skipped).

The bookmark is the highest ``updatedAt`` the detector's listing returned, capped by the run's
start minus a clock-skew margin (the signpost), stored per (Station, enclaves, region, detector,
filter). The next run asks GuardDuty only for findings updated at or after it (≥, so equal
timestamps are re-read and the ledger skips them). It is not moved per page because ListFindings'
sort by ``updatedAt`` is unconfirmed (docs/decisions.md#gd-criteria): were it ignored, a per-page bookmark could
skip an undelivered older finding after a crash. The ledger is still committed per page, so a
crash (even SIGKILL) loses at most the page in flight, and the rerun's re-reads cost no Station
call.

A bookmark only says something about the window its runs covered: it is stored with the lower
bound of that window (``Bookmark.since_ms``; None means from the beginning) and narrows a later
run only if that bound is at or before the later run's ``--since``. So ``backfill --since 2d``
followed by a plain ``backfill`` reads everything, and the plain run's bookmark then covers all
time. A run that resumed from a bookmark covers its window *and* the bookmark's (the two meet at
the bookmark), so its own bookmark keeps the older bound. ``--until`` needs no rule: a bookmark
never passes the newest finding its run listed, which is at or before that run's ``--until``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from gdtrustar.app import Run
from gdtrustar.checkpoint import Checkpoint, delivery_scope
from gdtrustar.guardduty import Criteria, Target, count, known_total, pages, prefetch
from gdtrustar.items import Item, build_item
from gdtrustar.ledger import Bookmark
from gdtrustar.settings import Settings

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from boto3 import Session
    from mypy_boto3_guardduty.type_defs import FindingCriteriaTypeDef

# GuardDuty's clock and eventual consistency vs ours: the bookmark stays this far behind our start.
SKEW = 15 * 60


def backfill(run: Run, targets: list[Target], criteria: Criteria, use_bookmarks: bool) -> None:
    """Deliver every matching finding of every target; Ctrl-C finishes the page in flight.

    With Station unreachable at start nothing is read: the bookmarks have not moved, so the next
    run picks up exactly here (the run still exits 1).
    """
    if run.unreachable is not None:
        run.reporter.line("backfill stopped before reading GuardDuty: bookmarks unchanged, rerun to resume")
        return
    signpost = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - SKEW))
    samples = "samples-excluded" if run.options.exclude_samples else None  # skipped samples are not covered
    scope = f"{run.ledger.station if run.ledger else ''}|{delivery_scope(run.engine.enclave_ids, samples)}"
    plans = []
    for target in targets:
        key = f"{scope}|{target.region}|{target.detector_id}|{criteria.key()}"
        stored = run.ledger.get_bookmark(key) if use_bookmarks and run.ledger is not None else None
        plans.append((target, key, stored, resume(stored, criteria.since_ms)))
    wire = [(t, key, stored, mark, criteria.finding_criteria(_ms(mark.at) if mark else None))
            for t, key, stored, mark in plans]
    run.reporter.set_total(known_total([count(t, c) for t, *_, c in wire]), "backfill")
    with run.graceful_interrupt():
        try:
            for target, key, stored, mark, wire_criteria in wire:
                if run.engine.stopping:
                    break
                covered_from = mark.since_ms if mark else criteria.since_ms
                _one_detector(run, target, wire_criteria, _bookmarker(run, key, stored, covered_from, signpost))
        except KeyboardInterrupt:  # the second Ctrl-C
            run.engine.request_stop()


def resume(stored: Optional[Bookmark], since_ms: Optional[int]) -> Optional[Bookmark]:
    """The stored bookmark if it may narrow a run starting at ``since_ms`` and actually narrows it."""
    if stored is None or not stored.covers(since_ms):
        return None
    at_ms = _ms(stored.at)
    if at_ms is None or (since_ms is not None and at_ms <= since_ms):
        return None  # the run's own --since is already later: the old window adds nothing
    return stored


class _Newest:
    """The highest ``updatedAt`` a detector's listing returned, for its bookmark."""

    def __init__(self) -> None:
        self.value = ""


def _bookmarker(run: Run, key: str, stored: Optional[Bookmark], covered_from: Optional[int],
                signpost: str) -> tuple[_Newest, Checkpoint]:
    """The detector's checkpoint; acknowledged, it stores the bookmark unless a wider one is kept.

    A run narrower than the stored bookmark that could not resume from it (its ``--since`` is past
    the bookmark) leaves the stored one alone: that one still serves later, wider runs.
    """
    newest = _Newest()

    def store(complete: bool) -> None:
        if not newest.value or run.ledger is None or run.engine.stopping:
            return
        bookmark = Bookmark(min(newest.value, signpost), covered_from)
        if stored is None or bookmark.covers(stored.since_ms):
            run.ledger.set_bookmark(key, bookmark)
            run.ledger.commit()

    return newest, Checkpoint(store, name=key)


def _one_detector(run: Run, target: Target, wire_criteria: FindingCriteriaTypeDef,
                  bookmark: tuple[_Newest, Checkpoint]) -> None:
    newest, checkpoint = bookmark
    stop = threading.Event()
    run.reporter.describe(target.label)
    try:
        for page in prefetch(pages(target, wire_criteria), stop):
            if run.engine.stopping:
                break
            for raw in page:
                if run.engine.stopping:
                    break
                item = _item(target, raw)
                newest.value = max(newest.value, (item.finding or {}).get("updatedAt", ""))
                run.engine.submit(checkpoint.hold(item))
            run.engine.flush()  # a page boundary: in-flight writes done, ledger committed
    finally:
        stop.set()
    if not run.engine.stopping:
        checkpoint.seal()  # every finding settled at the last flush: stores the bookmark if all were handled


def _item(target: Target, raw: Any) -> Item:
    """The same never-raising item builder ``send`` uses: a hostile finding is invalid, the run goes on."""
    finding_id = raw.get("Id", "?") if isinstance(raw, dict) else "?"
    return build_item(f"guardduty:{target.label}:{finding_id}", raw)


def _ms(iso: Optional[str]) -> Optional[int]:
    if not iso:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def warn_shared_budget(session: Session, regions: list[str], settings: Settings, echo: Callable[[str], None]) -> None:
    """One line when a deployed stack in these regions spends the same API key's quota."""
    if not settings.api_key:  # the run stops on the missing credentials anyway
        return
    from botocore.config import Config

    from gdtrustar.budget import shared_budget_warning

    quick = Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1})
    line = shared_budget_warning(settings, regions, lambda r: session.client("cloudformation", region_name=r,
                                                                              config=quick))
    if line:
        echo(f"gdtrustar: {line}")
