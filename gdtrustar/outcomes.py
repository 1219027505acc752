"""What the delivery engine says about each finding: the vocabulary its sinks (output, failures file) read.

Every item ends as exactly one ``Outcome`` per enclave, with one of ``ACTIONS`` (``actions.Action``); ``Summary`` adds
them up for the run's last lines and exit status, and an item's ``Tally`` adds up its own for its
source's receipt (see ``checkpoint.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from gdtrustar.actions import ENGINE_ACTIONS, Action
from gdtrustar.checkpoint import HANDLED
from gdtrustar.items import Receipt

ACTIONS = ENGINE_ACTIONS  # in the summary's order


@dataclass
class Outcome:
    """What happened to one finding in one enclave."""

    action: Action
    origin: str
    finding_id: Optional[str] = None
    enclave_id: Optional[str] = None
    external_id: Optional[str] = None
    report_id: Optional[str] = None
    error: Optional[str] = None
    report: Optional[dict] = None
    finding: Optional[dict] = field(default=None, repr=False)
    document: Any = field(default=None, repr=False)
    calls: int = 0

    def record(self) -> dict:
        """The ``--json`` record (keys are a contract)."""
        out: dict[str, Any] = {
            "finding_id": self.finding_id,
            "enclave_id": self.enclave_id,
            "action": self.action,
            "external_id": self.external_id,
            "report_id": self.report_id,
            "error": self.error,
            "origin": self.origin,
        }
        if self.report is not None:
            out["report"] = self.report
        return out


@dataclass
class Summary:
    """Counts by action; ``findings`` counts findings (and invalid documents), not enclave pairs."""

    counts: dict[Action, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    findings: int = 0
    enclaves: int = 1
    station_calls: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    interrupted: bool = False
    notes: list = field(default_factory=list)  # sources' own figures, printed (str) after the counts

    @property
    def problems(self) -> int:
        return self.counts[Action.INVALID] + self.counts[Action.FAILED]

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class Tally:
    """The outcomes still due for one item, and what they add up to for its receipt."""

    __slots__ = ("receipt", "due", "handled", "narrowed")

    def __init__(self, receipt: Optional[Receipt], due: int) -> None:
        self.receipt, self.due, self.handled, self.narrowed = receipt, due, True, False

    def note(self, outcome: Outcome) -> None:
        """Count one outcome in; the last one settles the receipt."""
        self.due -= 1
        self.handled = self.handled and outcome.action in HANDLED
        # a finding skipped by a user's flag (--exclude-samples) was left out, not delivered
        self.narrowed = self.narrowed or (outcome.action == Action.SKIPPED and outcome.finding is not None)
        if self.due == 0 and self.receipt is not None:
            self.receipt.settle(self.handled, self.narrowed)
