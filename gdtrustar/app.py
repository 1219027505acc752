"""The composition root: wires settings, Station clients, ledger, output and failures into a run.

Commands build a ``Run`` and feed it items. The Run checks the settings and the enclave permissions
before anything is shown, so a configuration error is one line on a clean terminal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from gdtrustar.delivery import Engine, Summary
from gdtrustar.failures import FailuresFile, choose_path
from gdtrustar.items import Item
from gdtrustar.ledger import Ledger, default_path, open_ledger
from gdtrustar.output import Reporter
from gdtrustar.pacing import TokenBucket
from gdtrustar.settings import Settings
from gdtrustar.status import ExitStatus


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
        self.bucket: Optional[TokenBucket] = None
        factory = None
        if not options.dry_run:
            settings.require_credentials()
            settings.require_enclaves()
        state = options.state or default_path()
        path, note = choose_path(options.failures, state.parent)  # before anything is attempted
        self.failures = FailuresFile(path, explicit=options.failures is not None, note=note)
        if not options.dry_run:
            from gdtrustar.station import station_factory  # deferred: the SDK is slow to import

            self.ledger = open_ledger(state, settings.api_endpoint)
            self.bucket = TokenBucket(settings.max_rate)
            now = time.time()
            self.bucket.seed([now - t for t in self.ledger.recent_calls(now - self.bucket.window)])
            factory = station_factory(settings, self.bucket)
            factory().check_enclaves(settings.enclave_ids)
        self.reporter = Reporter(json_mode=options.json, dry_run=options.dry_run, verbosity=options.verbosity)
        self.engine = Engine(
            enclave_ids=settings.enclave_ids,
            sink=self._sink,
            client_factory=factory,
            ledger=self.ledger,
            concurrency=options.concurrency,
            exclude_samples=options.exclude_samples,
            force=options.force,
        )

    def _sink(self, outcome) -> None:
        self.reporter(outcome)
        self.failures.add(outcome)

    def deliver(self, items: Iterable[Item]) -> Summary:
        """Deliver a stream of items and finish the run."""
        with self.graceful_interrupt():
            summary = self.engine.run(items)
        self.finish()
        return summary

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
            if self.engine.stopping:
                raise KeyboardInterrupt
            self.engine.request_stop()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def finish(self) -> None:
        """Close the ledger and failures file and print the summary."""
        summary = self.engine.summary
        if summary.finished is None:
            self.engine.close()
        if self.ledger is not None:
            if self.bucket is not None:  # the next run on this key starts where this one's budget is
                now = time.time()
                self.ledger.save_calls([now - age for age in self.bucket.ages()])
            self.ledger.close()
        path = self.failures.close()
        self.reporter.finish(summary, path, self.failures.note)

    def exit_status(self) -> ExitStatus:
        summary = self.engine.summary
        if summary.interrupted:
            return ExitStatus.INTERRUPTED
        return ExitStatus.UNDELIVERED if summary.problems else ExitStatus.SUCCESS
