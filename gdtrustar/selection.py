"""Client-side filters for ``send``: the same questions ``backfill`` asks GuardDuty, asked of each finding.

``backfill`` filters server-side (``FindingCriteria``), so a finding outside the filters never
reaches it: it is not counted and has no ``--json`` record. ``send`` does the same client-side,
for every source alike (files, stdin, failures files, the S3 export): a finding the filters leave
out is not handed to the engine, so it has no record and is not in the summary's counts; the
summary adds one line with how many were left out. Invalid items always pass: a filter cannot
judge what could not be read, and it must still be listed.

The semantics are GuardDuty's, so the two commands agree: ``updatedAt`` within ``[--since,
--until]`` (inclusive, compared as instants), severity at or above ``--min-severity`` rounded down
(the criterion GuardDuty accepts is an integer), type and account exact. ``--region`` matches the
finding's region. Samples stay with the engine (``--exclude-samples`` reports them ``skipped``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

from gdtrustar.findings import canonical_time
from gdtrustar.guardduty import Criteria
from gdtrustar.items import Item


def _ms(stamp: object) -> Optional[int]:
    try:
        canonical = canonical_time(stamp)
    except (OverflowError, ValueError):
        return None
    if canonical is None:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(canonical.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """What ``send`` was asked to keep; ``admits`` is the one test."""

    criteria: Criteria = Criteria()
    regions: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        c = self.criteria
        return bool(self.regions or c.types or c.accounts or c.min_severity is not None
                    or c.since_ms is not None or c.until_ms is not None)

    def admits(self, finding: dict) -> bool:
        """Whether a normalised finding is inside every filter."""
        c = self.criteria
        if self.regions and finding.get("region") not in self.regions:
            return False
        if c.accounts and finding.get("accountId") not in c.accounts:
            return False
        if c.types and finding.get("type") not in c.types:
            return False
        if c.min_severity is not None and not float(finding.get("severity", 0)) >= int(c.min_severity):
            return False
        return self.in_window(finding.get("updatedAt"))

    def in_window(self, updated_at: object) -> bool:
        """``updatedAt`` within ``[since, until]``; an unreadable time is outside any window."""
        c = self.criteria
        if c.since_ms is None and c.until_ms is None:
            return True
        at = _ms(updated_at)
        if at is None:
            return False
        return (c.since_ms is None or at >= c.since_ms) and (c.until_ms is None or at <= c.until_ms)


class Filtered:
    """Counts what the filters left out, for the summary (its ``str`` is the summary's line)."""

    def __init__(self) -> None:
        self.count = 0

    def __str__(self) -> str:
        return f"{self.count} findings outside the filters, not sent" if self.count else ""


def select(items: Iterable[Item], selection: Selection, left_out: Filtered) -> Iterator[Item]:
    """The items the selection admits (invalid ones always); each one left out is settled as narrowed."""
    for item in items:
        if item.finding is None or selection.admits(item.finding):
            yield item
            continue
        left_out.count += 1
        if item.receipt is not None:
            item.receipt.settle(True, narrowed=True)
