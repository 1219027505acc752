"""The composition root: wires settings, the backend's writers, ledger, output and failures into a run.

Commands build a ``Run`` and feed it items. The Run checks the settings and the enclave permissions
before anything is shown, so a configuration error is one line on a clean terminal. A Station that
cannot be reached at start is not a configuration error: the run still reads its input and lists
every new or changed finding in the failures file without calling Station (exit 1).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from gdtrustar import backends, callstate
from gdtrustar.delivery import INTERRUPTED, Engine
from gdtrustar.errors import GdTrustarError, RetriableError, StationUnavailableError
from gdtrustar.failures import FailuresFile, choose_path
from gdtrustar.items import Item
from gdtrustar.ledger import Ledger, default_path, open_ledger
from gdtrustar.outcomes import Outcome, Summary
from gdtrustar.output import OUTPUT_CLOSED, Reporter
from gdtrustar.pacing import Pacer, interruptible_sleep
from gdtrustar.settings import Settings
from gdtrustar.status import ExitStatus
from gdtrustar.writer import Writer


@dataclass(frozen=True)
class RunOptions:
    """Flags shared by ``send`` and ``backfill``."""

    dry_run: bool = False
    concurrency: int = 8
    failures: Optional[Path] = None
    exclude_samples: bool = False
    state: Optional[Path] = None
    force: bool = False
    json: bool = False
    verbosity: int = 0


class Run:
    """One delivery run: engine + reporter + failures file + ledger, finished exactly once."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.options = options
        self.ledger: Optional[Ledger] = None
        self.pacer: Optional[Pacer] = None
        self.calls_file: Optional[Path] = None
        self.unreachable: Optional[str] = None  # why Station could not be reached at start
        self.stop = threading.Event()  # set by Engine.request_stop: ends every wait at once
        writers = None
        if not options.dry_run:
            settings.require_credentials()
            settings.require_enclaves()
        state = options.state or default_path()
        path, note = choose_path(options.failures, state.parent)  # before anything is attempted
        self.failures = FailuresFile(path, explicit=options.failures is not None, note=note)
        if not options.dry_run:
            writers = self._connect(settings, state)
        self.reporter = Reporter(json_mode=options.json, dry_run=options.dry_run, verbosity=options.verbosity,
                                 on_closed=lambda: self.engine.request_stop(OUTPUT_CLOSED))
        self._finished = False
        self.engine = Engine(
            enclave_ids=settings.enclave_ids,
            sink=self._sink,
            render=backends.backend_for(settings).payload,
            writers=writers,
            ledger=self.ledger,
            concurrency=options.concurrency,
            exclude_samples=options.exclude_samples,
            force=options.force,
            stop=self.stop,
        )
        if self.unreachable is not None:
            self.engine.unavailable = StationUnavailableError(f"not attempted: {self.unreachable}")
            self.reporter.line(f"error: {self.unreachable}; nothing is sent this run")

    def _connect(self, settings: Settings, state: Path) -> Callable[[], Writer]:
        """Ledger, pacer (seeded with this API key's last minute) and the start-up enclave check.

        A Station that cannot be reached (connection refused, DNS, timeouts, 5xx, refused tokens) is a
        delivery failure, not a configuration error: the run goes on without calls and lists every
        finding it reads, so stdin is not lost. Rejected credentials, a missing create permission or a
        malformed URL still raise ``ConfigError`` (exit 2).
        """
        self.ledger = open_ledger(state, settings.api_endpoint)
        sleep = interruptible_sleep(self.stop)
        self.pacer = Pacer(settings.max_rate, sleep=sleep)
        self.calls_file = callstate.state_path(default_path().parent, settings.api_endpoint, settings.api_key or "")
        callstate.seed(self.pacer, self.calls_file)
        writers = backends.open_writers(settings, self.pacer, sleep=sleep)
        try:
            writers().check(settings.enclave_ids)
        except RetriableError as exc:
            self.unreachable = f"Station unreachable at start: {exc}"
        return writers

    def _sink(self, outcome: Outcome) -> None:
        self.failures.add(outcome)  # first: whatever happens to the output, the finding is listed
        self.reporter(outcome)

    def deliver(self, items: Iterable[Item]) -> Summary:
        """Deliver a stream of items and finish the run, however it ends."""
        with self.finishing(), self.graceful_interrupt():
            self.engine.run(items)
        return self.engine.summary

    @contextlib.contextmanager
    def finishing(self) -> Iterator[Run]:
        """The run's boundary: however the block ends, the run is finished (see ``finish``)."""
        try:
            yield self
        except BaseException as exc:
            self.finish(exc)
            raise
        self.finish()

    @contextlib.contextmanager
    def graceful_interrupt(self) -> Iterator[None]:
        """First Ctrl-C: stop taking findings, let in-flight writes finish and be recorded.

        A KeyboardInterrupt raised at an arbitrary point of the main thread could land between a
        write's completion and its ledger row or output record; a flag checked between findings
        cannot. A second Ctrl-C raises as usual.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: object) -> None:
            if self.engine.summary.interrupted:
                raise KeyboardInterrupt
            self.engine.request_stop()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def finish(self, error: Optional[BaseException] = None) -> None:
        """Finish exactly once, on every exit path; ``error`` is what is ending the run, if anything.

        In-flight writes complete and queued ones are listed as not attempted; after an error the
        finding in hand (and whatever could not be completed) is listed too; then the ledger is
        committed, the failures file published (renamed from its temporary name) and the summary
        printed. Each step runs even if an earlier one failed; a failure of a step is raised at the
        end unless ``error`` is already on its way.
        """
        if self._finished:
            return
        self._finished = True
        steps = _Steps()
        if error is not None:
            self.engine.request_stop(stop_reason(error))
        closed = self.engine.summary.finished is not None or steps.run(self.engine.close)
        if error is not None or not closed:
            self.engine.request_stop(stop_reason(error or steps.failure))
            steps.run(lambda: self.engine.abandon(self.engine.stop_reason or INTERRUPTED))
        steps.run(self._close_ledger)
        steps.run(self.failures.close)
        stopped = None if self.engine.summary.interrupted else self.engine.stop_reason
        steps.run(lambda: self.reporter.finish(self.engine.summary, self.failures.published, self.failures.note,
                                               stopped))
        if steps.failure is not None and error is None:
            raise steps.failure

    def _close_ledger(self) -> None:
        if self.pacer is not None and self.calls_file is not None:  # the next run on this key goes on from here
            callstate.save(self.pacer, self.calls_file)
        if self.ledger is not None:
            self.ledger.close()

    def exit_status(self) -> ExitStatus:
        summary = self.engine.summary
        if summary.interrupted:
            return ExitStatus.INTERRUPTED
        if self.reporter.closed:
            return ExitStatus.OUTPUT_CLOSED
        return ExitStatus.UNDELIVERED if summary.problems or self.unreachable else ExitStatus.SUCCESS


def stop_reason(error: Optional[BaseException]) -> str:
    """Why queued findings were not attempted, as their failures record says."""
    if error is None or isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, GdTrustarError):
        return f"run stopped: {str(error).splitlines()[0][:200]}"
    return f"run stopped by an unexpected {type(error).__name__}"


class _Steps:
    """Runs finishing steps one after another; remembers the first failure instead of stopping."""

    def __init__(self) -> None:
        self.failure: Optional[BaseException] = None

    def run(self, step: Callable[[], object]) -> bool:
        """True if ``step`` completed."""
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - a finishing step must never skip the next one
            self.failure = self.failure or exc
            return False
        return True
