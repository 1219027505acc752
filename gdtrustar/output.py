"""What people and machines see: JSON Lines on stdout, progress, problems and the summary on stderr.

``--json`` makes stdout one record per finding and enclave (nothing else is ever written there).
Without it, stdout carries the dry-run table; a terminal gets a live rich progress bar on stderr.
Each invalid or failed finding is one ``gdtrustar: <action>: <origin>: <reason>`` line on stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from gdtrustar.actions import UNDELIVERED, Action
from gdtrustar.logs import redact
from gdtrustar.mapper import severity_label
from gdtrustar.outcomes import Outcome, Summary
from gdtrustar.text import json_text, printable

TABLE_ROWS = 50
OUTPUT_CLOSED = "output closed"


def _markup_safe(text: str) -> str:
    """A progress description (rendered as rich markup) from text that may come from AWS."""
    return escape(printable(text))


class RateColumn(ProgressColumn):
    """Findings per second, as rich measures it over the last 30 s."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "-/s")


class Reporter:
    """The engine's sink for people and machines; all output goes through here."""

    def __init__(
        self,
        *,
        json_mode: bool,
        dry_run: bool,
        verbosity: int = 0,
        stdout: Optional[IO[str]] = None,
        stderr: Optional[IO[str]] = None,
        total: Optional[int] = None,
        on_closed: Optional[Callable[[], None]] = None,
    ) -> None:
        self.json_mode = json_mode
        self.dry_run = dry_run
        self.verbosity = verbosity
        self.on_closed = on_closed
        self.closed = False  # stdout's reader went away (`| head`): nothing more is written there
        self._err_closed = False
        self.stdout = stdout or sys.stdout or open(os.devnull, "w")  # noqa: SIM115 - `>&-` leaves no stdout
        self.err = Console(file=stderr or sys.stderr or open(os.devnull, "w"), highlight=False,  # noqa: SIM115
                           soft_wrap=True)
        # Piped output gets a usable width instead of rich's 80-column fallback.
        self.out = Console(file=self.stdout, highlight=False,
                           width=None if self.stdout.isatty() else 140)
        self.rows: list[tuple[Text, ...]] = []
        self.by_severity: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.progress: Optional[Progress] = None
        self._task: Optional[TaskID] = None
        if self.err.is_terminal and verbosity >= 0:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), RateColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.err, transient=True,
            )
            self._task = self.progress.add_task("delivering", total=total, detail="")
            self.progress.start()

    def __call__(self, outcome: Outcome) -> None:
        if self.json_mode and not self.closed:
            record = json_text(outcome.record()) + "\n"
            with self._writing_stdout():
                self.stdout.write(record)
        noted = outcome.action in UNDELIVERED or (outcome.action == Action.SKIPPED and outcome.finding is None)
        if noted and self.verbosity > -2:  # a skipped non-finding document gets its one line too
            self.line(f"{outcome.action}: {outcome.origin}: {outcome.error}")
        if outcome.finding is not None and outcome.action == Action.DRY_RUN:
            self._tally(outcome.finding, outcome.report)
        self.counts[outcome.action] += 1
        if self.progress is not None:
            detail = " ".join(f"{action} {n}" for action, n in self.counts.items())
            self._update(advance=1, detail=detail)

    def set_total(self, total: Optional[int], description: Optional[str] = None) -> None:
        """Backfill knows its total up front (GetFindingsStatistics) and names the detector it reads."""
        self._update(total=total, description=_markup_safe(description or "delivering"))

    def describe(self, description: str) -> None:
        self._update(description=_markup_safe(description))

    def _update(self, **fields: Any) -> None:
        if self.progress is not None and self._task is not None:
            self.progress.update(self._task, **fields)

    def line(self, text: str) -> None:
        """One problem line on stderr, above the progress bar."""
        self.say(f"gdtrustar: {text}")

    def say(self, text: str) -> None:
        """Every line for humans on stderr goes through here: secrets redacted, controls escaped."""
        if self._err_closed:
            return
        try:
            self.err.print(Text(printable(redact(text))), markup=False, highlight=False)
        except (OSError, ValueError):  # stderr closed too: the failures file still lists everything
            self._err_closed = True

    @contextlib.contextmanager
    def _writing_stdout(self) -> Iterator[None]:
        """A closed stdout (EPIPE, or a closed file) stops the run like Ctrl-C does, quietly."""
        try:
            yield
        except (BrokenPipeError, ValueError):
            if not self.closed:
                self.closed = True
                if self.on_closed is not None:
                    self.on_closed()  # the Run stops the engine with OUTPUT_CLOSED

    def _tally(self, finding: dict, report: Optional[dict]) -> None:
        label = severity_label(float(finding.get("severity", 0)))
        self.by_severity[label] += 1
        self.by_type[str(finding.get("type"))] += 1
        if len(self.rows) < TABLE_ROWS:
            title = (report or {}).get("title", "")
            self.rows.append(tuple(Text(printable(str(cell))) for cell in (
                label, title, finding.get("type"), finding.get("accountId"), finding.get("region"))))

    def finish(self, summary: Summary, failures_path: Optional[Path], note: Optional[str] = None,
               stopped: Optional[str] = None) -> None:
        """Stop the progress bar, print the dry-run table (stdout) and the summary (stderr)."""
        if self.progress is not None:
            self.progress.stop()
        if self.dry_run and not self.json_mode and self.rows and not self.closed:
            with self._writing_stdout():
                self._print_table()
        if not self.closed:
            with self._writing_stdout():
                self.stdout.flush()  # a reader that went away is noticed here, not at interpreter exit
        self._print_summary(summary, failures_path, note, stopped)

    def _print_table(self) -> None:
        table = Table(title="Reports that would be sent (dry run)", show_lines=False)
        table.add_column("severity", no_wrap=True)
        table.add_column("title", ratio=3, overflow="fold")
        table.add_column("type", ratio=2, overflow="fold")
        table.add_column("account", no_wrap=True)
        table.add_column("region", no_wrap=True)
        for row in self.rows:
            table.add_row(*row)
        self.out.print(table)
        shown = sum(self.by_severity.values())
        if shown > len(self.rows):
            self.out.print(f"... and {shown - len(self.rows)} more")
        counts = Table(title="By severity and type")
        counts.add_column("severity / type")
        counts.add_column("findings", justify="right")
        for label in ("Critical", "High", "Medium", "Low"):
            if self.by_severity[label]:
                counts.add_row(f"[bold]{label}[/bold]", str(self.by_severity[label]))
        counts.add_section()
        for name, count in self.by_type.most_common(25):
            counts.add_row(Text(printable(name)), str(count))
        if len(self.by_type) > 25:
            counts.add_row(f"... {len(self.by_type) - 25} more types", "")
        self.out.print(counts)

    def _print_summary(self, summary: Summary, failures_path: Optional[Path], note: Optional[str],
                       stopped: Optional[str]) -> None:
        if self.verbosity < -1:
            return
        counts = ", ".join(f"{count} {action}" for action, count in summary.counts.items() if count) or "nothing"
        rate = summary.findings / summary.elapsed if summary.elapsed > 0 else 0.0
        head = "interrupted" if summary.interrupted else f"stopped ({stopped})" if stopped else "done"
        enclaves = f" x {summary.enclaves} enclaves" if summary.enclaves > 1 else ""
        self.say(f"gdtrustar: {head}: {summary.findings} findings{enclaves} in {summary.elapsed:.1f}s "
                 f"({rate:.0f}/s): {counts}" + ("" if self.dry_run else f"; {summary.station_calls} Station calls"))
        for figure in summary.notes:  # a source's own figures (objects read, findings left out by filters)
            if str(figure):
                self.say(f"gdtrustar: {figure}")
        if failures_path is not None and summary.problems:
            self.say(f"gdtrustar: {summary.problems} not delivered, listed in {failures_path}"
                     f"{f' ({note})' if note else ''}; replay with: gdtrustar send {failures_path}")
