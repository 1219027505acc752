"""The backend seam: what the delivery engine needs from whatever writes reports, and nothing more.

A backend is a module with two functions (``Backend``): ``payload`` renders a backend-neutral
``mapper.Report`` in its wire form, and ``open_writers`` returns a factory of ``Writer``s, one per
worker thread, sharing the run's pacer and whatever else the backend shares across a run (a token,
a fallback switch). The engine only calls ``Writer.write`` and ``Writer.check`` and reads
``WriteResult``; the Lambda also sets ``Writer.deadline``. ``backends.py`` chooses the backend.

The ledger's digest is taken over the chosen backend's payload (``digest``), so a change to what
would be sent (the finding, or the wire form) rewrites the report once, and the same payload always
gives the same digest. The formula is frozen: ledgers written by earlier versions hold it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

if TYPE_CHECKING:
    from gdtrustar.mapper import Report
    from gdtrustar.pacing import Pacer
    from gdtrustar.settings import Settings

Payload = dict[str, Any]


@dataclass(frozen=True)
class WriteResult:
    """What the backend told us about one write; ``existed`` is None when it did not say."""

    report_id: Optional[str]
    existed: Optional[bool]
    calls: int


class Writer(Protocol):
    """One worker's writer (used from one thread only).

    ``deadline`` (an absolute ``time.monotonic()`` value, or None) may be set at any time: no wait
    of a write then ends after it, and a write whose next wait would raises
    ``DeadlineExceededError`` without sleeping.
    """

    deadline: Optional[float]

    def write(self, report: Report) -> WriteResult:
        """Create or replace the report keyed by ``report.external_id``: exactly one report per key.

        Raises ``RetriableError`` (may pass) or ``PermanentDeliveryError`` (will not) when it fails.
        """
        ...

    def check(self, enclave_ids: tuple[str, ...]) -> None:
        """Fail early unless the credentials can write to every enclave.

        ``ConfigError`` is the user's to fix; ``RetriableError`` means the service could not be reached.
        """
        ...


class Backend(Protocol):
    """A backend module's interface (a module satisfies it: see ``backends.py``)."""

    def payload(self, report: Report) -> Payload:
        """The report as this backend sends it: the ``--json`` ``report`` record and the ledger digest."""
        ...

    def open_writers(self, settings: Settings, pacer: Optional[Pacer] = None, *,
                     sleep: Optional[Callable[[float], None]] = None) -> Callable[[], Writer]:
        """A factory of per-thread writers sharing ``pacer`` (a new one at ``settings.max_rate`` when None)."""
        ...


def digest(payload: Payload) -> str:
    """A sha256 of the payload as sorted JSON: the ledger compares it to tell "changed" from "same"."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
