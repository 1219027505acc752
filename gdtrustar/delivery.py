"""The delivery engine shared by ``send``, ``backfill`` and the Lambda.

Pipeline, left to right::

    documents ─► items (normalised finding | invalid) ─► per enclave: report ─► ledger decision
        ─► (new/changed) paced keyed write on a worker thread ─► Outcome ─► sink (output, failures)

The main thread owns everything stateful (ledger, sink, counters); workers only call the backend,
each with its own ``writer.Writer``: the engine knows nothing else of it (``backends.py`` chose it,
and its ``payload`` is what a dry run shows and the ledger digests). At most ``2 × concurrency``
writes are in flight, so memory stays flat for any input size. Every item ends as exactly one
``Outcome`` per enclave (``outcomes.ACTIONS``). After ``BREAKER`` consecutive failures the backend
is considered down and the rest is failed without calls, so a long outage fills the failures file
quickly instead of retrying every finding for minutes; a backend unreachable at start
(``unavailable``) is not called at all. A stop request (Ctrl-C) also sets the ``stop`` event,
which ends every wait at once.

The engine does not know where an item came from. When every enclave's outcome of an item is in,
it settles the item's ``receipt`` (if its source gave it one; see ``checkpoint.py``), which is how
a source learns what it may acknowledge.

The same finding twice in one run: the second copy waits for the first one's write, then the
ledger decides, so an older copy arriving second is ``unchanged`` (newest wins). A run without a
ledger that writes (the Lambda) keeps the rows of its own writes in memory for the same decision.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, NamedTuple, Optional, Union

from gdtrustar.actions import Action, Decision
from gdtrustar.errors import GdTrustarError
from gdtrustar.findings import is_sample
from gdtrustar.items import Item
from gdtrustar.ledger import Delivered, Ledger, decide
from gdtrustar.mapper import Report, build_report, external_id
from gdtrustar.outcomes import Outcome, Summary, Tally
from gdtrustar.writer import Payload, Writer, WriteResult, digest

BREAKER = 20
PLACEHOLDER_ENCLAVE = "<enclave-id>"  # dry run without a configured enclave: show the report anyway
INTERRUPTED = "interrupted"


class _Pending(NamedTuple):
    """A write in flight: its outcome so far, its ledger row to be, and what settles when it lands."""

    outcome: Outcome
    key: tuple[str, str]  # (enclave id, finding id)
    updated_at: str
    digest: str
    known: bool  # the ledger (or this run) has a row for it: an unspecific answer means "updated"
    tally: Tally


class Engine:
    """Turns items into outcomes; see the module docstring for the flow.

    ``render`` is the backend's wire form of a report (``writer.Backend.payload``): the dry run shows
    it and the ledger digests it. ``writers`` makes one writer per worker thread; None is a dry run.
    """

    def __init__(
        self,
        *,
        enclave_ids: tuple[str, ...],
        sink: Callable[[Outcome], None],
        render: Callable[[Report], Payload],
        writers: Optional[Callable[[], Writer]] = None,
        ledger: Optional[Ledger] = None,
        concurrency: int = 8,
        exclude_samples: bool = False,
        force: bool = False,
        batch_size: int = 50,
        stop: Optional[threading.Event] = None,
    ) -> None:
        self.enclave_ids = enclave_ids
        self.sink = sink
        self.render = render
        self.writers = writers
        self.ledger = ledger
        self.exclude_samples = exclude_samples
        self.force = force
        self.batch_size = batch_size
        self.summary = Summary(enclaves=max(1, len(enclave_ids)))
        self.dry_run = writers is None
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="station")
        self._max_in_flight = max(1, concurrency) * 2
        self._in_flight: dict[Future[Union[WriteResult, GdTrustarError]], _Pending] = {}
        self._in_flight_keys: set[tuple[str, str]] = set()
        self._uncommitted = 0
        self._consecutive_failures = 0
        self._memo: dict[tuple[str, str], Delivered] = {}  # rows of this run's writes when there is no ledger
        self._current: Optional[Item] = None
        self.stop_reason: Optional[str] = None
        self._stop = stop  # set with the stop flag: wakes every worker waiting in the pacer or back-off
        self.unavailable: Optional[GdTrustarError] = None  # Station unreachable at start: nothing is attempted

    # -- public -------------------------------------------------------------------------------
    def run(self, items: Iterable[Item]) -> Summary:
        """Deliver everything; a stop request (Ctrl-C) ends reading, in-flight writes finish, commit."""
        try:
            for item in items:
                if self.stopping:
                    break
                self.submit(item)
        except KeyboardInterrupt:  # a second Ctrl-C, or no graceful handler installed
            self.summary.interrupted = True
        self.close()
        return self.summary

    def request_stop(self, reason: str = INTERRUPTED) -> None:
        """Ask the run to stop taking items and end every wait (safe from a signal handler); the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if reason == INTERRUPTED:
            self.summary.interrupted = True
        if self._stop is not None:
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self.summary.interrupted or self.stop_reason is not None

    def submit(self, item: Item) -> None:
        """Queue one item; blocks while the in-flight window is full."""
        self._current = item  # if handling it raises, ``abandon`` lists it
        self.summary.findings += 1
        self._handle(item)
        self._current = None

    def abandon(self, reason: str) -> None:
        """After an unexpected error: list what was read and has no outcome yet, without calling Station.

        That is the item in hand and every write still in flight: queued ones are cancelled, one
        already running finishes but is listed all the same (replaying a delivered finding is
        harmless, losing an undelivered one is not). Their receipts settle as not handled.
        """
        self.request_stop(reason)
        self._pool.shutdown(wait=True, cancel_futures=True)  # queued writes never start; running ones end
        item, self._current = self._current, None
        pending: list[tuple[Outcome, Optional[Tally]]] = [(p.outcome, p.tally) for p in self._in_flight.values()]
        if item is not None:
            action = Action.FAILED if item.finding is not None else Action.INVALID
            pending.insert(0, (Outcome(action, item.origin, (item.finding or {}).get("id"), error=item.error,
                                       finding=item.finding, document=item.document), None))
        self._in_flight.clear()
        self._in_flight_keys.clear()
        for outcome, tally in pending:
            if outcome.action != Action.INVALID:
                outcome.action, outcome.error = Action.FAILED, f"not delivered or not recorded: {reason}"
            try:
                self._emit(outcome, tally)
            except Exception:  # noqa: S112 - keep listing the others; the run already failed
                continue
        self.summary.finished = self.summary.finished or time.monotonic()

    def _handle(self, item: Item) -> None:
        targets = self.enclave_ids or (None,)
        if item.finding is None:
            action = Action.SKIPPED if item.skipped else Action.INVALID
            self._emit(Outcome(action, item.origin, error=item.error, document=item.document), Tally(item.receipt, 1))
            return
        finding_id = item.finding["id"]
        if self.exclude_samples and is_sample(item.finding):
            tally = Tally(item.receipt, len(targets))
            for enclave_id in targets:
                self._emit(Outcome(Action.SKIPPED, item.origin, finding_id, enclave_id,
                                   enclave_id and external_id(enclave_id, finding_id),
                                   error="sample finding excluded by --exclude-samples", finding=item.finding),
                           tally)
            return
        try:
            reports = [(e, build_report(item.finding, e or PLACEHOLDER_ENCLAVE)) for e in targets]
        except (RecursionError, ValueError, TypeError) as exc:  # a finding the mapper cannot render
            self._emit(Outcome(Action.INVALID, item.origin, finding_id,
                               error=f"cannot map finding: {type(exc).__name__}", finding=item.finding),
                       Tally(item.receipt, 1))
            return
        tally = Tally(item.receipt, len(reports))
        for enclave_id, report in reports:
            self._route(item, finding_id, enclave_id, report, tally)

    def flush(self) -> None:
        """Wait for every in-flight write and commit the ledger (a batch boundary)."""
        while self._in_flight:
            self._drain(wait_all=True)
        self._commit()

    def close(self) -> None:
        try:
            self.flush()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self.flush()
        self._pool.shutdown(wait=True)
        self.summary.finished = time.monotonic()

    # -- internals ----------------------------------------------------------------------------
    def _route(self, item: Item, finding_id: str, enclave_id: Optional[str], report: Report,
               tally: Tally) -> None:
        base = Outcome(Action.DRY_RUN, item.origin, finding_id, enclave_id, enclave_id and report.external_id,
                       finding=item.finding)
        payload = self.render(report)
        if self.dry_run or enclave_id is None:
            base.report = payload
            return self._emit(base, tally)
        key = (enclave_id, finding_id)
        while key in self._in_flight_keys:  # the same finding twice in one run: let the first land
            self._drain(wait_all=False)
        row = self.ledger.lookup(enclave_id, finding_id) if self.ledger else self._memo.get(key)
        fingerprint, updated_at = digest(payload), (item.finding or {}).get("updatedAt", "")
        if decide(row, updated_at, fingerprint, self.force) == Decision.UNCHANGED and row is not None:
            base.action, base.report_id = Action.UNCHANGED, row.report_id
            return self._emit(base, tally)
        while len(self._in_flight) >= self._max_in_flight:
            self._drain(wait_all=False)
        future = self._pool.submit(self._write, report)
        self._in_flight[future] = _Pending(base, key, updated_at, fingerprint, row is not None, tally)
        self._in_flight_keys.add(key)

    def _write(self, report: Report) -> Union[WriteResult, GdTrustarError]:
        """Runs on a worker thread: never touches the ledger or the sink."""
        if self.unavailable is not None:
            return self.unavailable
        if self._consecutive_failures >= BREAKER:
            return GdTrustarError(f"not attempted: Station failed {BREAKER} findings in a row")
        if self.stopping:  # queued but not started when the run stopped: listed, not silently dropped
            return GdTrustarError(f"not attempted: {self.stop_reason or INTERRUPTED}")
        try:
            return self._writer().write(report)
        except GdTrustarError as exc:
            return exc
        except Exception as exc:  # a bug or an SDK surprise must still end as a listed failure
            return GdTrustarError(f"unexpected {type(exc).__name__}: {exc}")

    def _writer(self) -> Writer:
        """The calling worker thread's writer, made on its first write."""
        writer: Optional[Writer] = getattr(self._local, "writer", None)
        if writer is None:
            if self.writers is None:
                raise GdTrustarError("a dry run has no writer")  # never: a dry run submits no writes
            writer = self._local.writer = self.writers()
        return writer

    def _drain(self, wait_all: bool) -> None:
        done, _ = wait(self._in_flight, return_when=ALL_COMPLETED if wait_all else FIRST_COMPLETED)
        for future in done:
            self._complete(future)
            del self._in_flight[future]  # only now: should completing raise, ``abandon`` lists it

    def _complete(self, future: Future[Union[WriteResult, GdTrustarError]]) -> None:
        outcome, key, updated_at, fingerprint, known, tally = self._in_flight[future]
        self._in_flight_keys.discard(key)
        result = future.result()
        if isinstance(result, WriteResult):
            self._consecutive_failures = 0
            created = result.existed is False or (result.existed is None and not known)
            outcome.action = Action.CREATED if created else Action.UPDATED
            outcome.report_id, outcome.calls = result.report_id, result.calls
            self._remember(key, Delivered(updated_at, fingerprint, result.report_id))
        else:
            self._consecutive_failures += 1
            outcome.action, outcome.error = Action.FAILED, str(result)
        self._emit(outcome, tally)
        if self._uncommitted >= self.batch_size:
            self._commit()

    def _remember(self, key: tuple[str, str], row: Delivered) -> None:
        if self.ledger is None:
            self._memo[key] = row
            return
        self.ledger.record(*key, row.updated_at, row.digest, row.report_id)
        self._uncommitted += 1

    def _commit(self) -> None:
        if self.ledger is not None and (self._uncommitted or self.ledger.pending):
            self.ledger.commit()
            self._uncommitted = 0

    def _emit(self, outcome: Outcome, tally: Optional[Tally] = None) -> None:
        self.summary.counts[outcome.action] += 1
        self.summary.station_calls += outcome.calls
        self.sink(outcome)
        if tally is not None:  # after the sink: a receipt may act on what was just recorded
            tally.note(outcome)
