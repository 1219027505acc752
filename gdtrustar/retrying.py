"""The pacing and retry loop every backend's calls go through; it knows our error classes and the pacer, not a wire.

A backend turns whatever its transport raised into ``errors`` types and hands its calls here:

* ``Retrier.paced(send, deadline)`` runs one call in a slot of the run's shared ``Pacer``. A
  ``RetriableError`` with a ``wait`` (a 429) is flow control: the pacer pauses every worker until
  the server's wait is over (``Pacer.congested``), unless the wait is longer than
  ``MAX_SERVER_WAIT`` (a spent quota), which pauses nobody. An accepted call is evidence of what
  the server allows (``Pacer.accepted``).
* ``Retrier.run(attempt, deadline)`` repeats ``attempt`` until it succeeds or fails for good. A 429
  is never counted as an attempt; 5xx, timeouts and dropped connections get ``Backoff.attempts``
  with capped full-jitter back-off; a ``PermanentDeliveryError`` is raised at once. What bounds one
  finding is time: ``FINDING_DEADLINE`` from its first try, or the caller's earlier deadline (the
  Lambda's), and no wait (pacing, a 429 pause, back-off) may end after it
  (``DeadlineExceededError``, raised without sleeping). A single 429 asking for more than
  ``MAX_SERVER_WAIT`` fails the finding at once.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional, TypeVar

from gdtrustar.errors import DeadlineExceededError, RetriableError
from gdtrustar.pacing import Backoff, Pacer, Ticket

log = logging.getLogger(__name__)
MAX_SERVER_WAIT = 300.0  # longest 429 waitTime (seconds) we sit out: longer means a spent quota
FINDING_DEADLINE = 15 * 60.0  # longest one finding may take, waits included, before it is failed
T = TypeVar("T")


def backoff_from_env() -> Backoff:
    """Retry tuning knobs (documented in README) for slow links or fast tests."""
    return Backoff(
        base=float(os.environ.get("GDTRUSTAR_BACKOFF_BASE", "0.5")),
        cap=float(os.environ.get("GDTRUSTAR_BACKOFF_CAP", "20")),
        attempts=int(os.environ.get("GDTRUSTAR_RETRY_ATTEMPTS", "6")),
    )


class Retrier:
    """A run's retry policy around its shared pacer; stateless between calls, so one serves every worker."""

    def __init__(self, pacer: Pacer, backoff: Backoff, sleep: Callable[[float], None]) -> None:
        self.pacer = pacer
        self.backoff = backoff
        self.sleep = sleep

    def paced(self, send: Callable[[], T], deadline: Optional[float]) -> T:
        """One call in its pacer slot; ``send`` raises our error types (a 429 as ``RetriableError`` with ``wait``)."""
        ticket = self.pacer.acquire(deadline)
        try:
            result = send()
        except RetriableError as exc:
            self.congested(ticket, exc)
            raise
        self.pacer.accepted(ticket)
        return result

    def congested(self, ticket: Optional[Ticket], error: Exception) -> None:
        """A 429 we sit out pauses every worker; ``ticket`` None (a call outside ``paced``) does not cut the rate."""
        if isinstance(error, RetriableError) and error.wait is not None and error.wait <= MAX_SERVER_WAIT:
            self.pacer.congested(ticket, error.wait)  # a longer wait (spent quota) pauses nobody

    def run(self, attempt: Callable[[float], T], deadline: Optional[float] = None) -> T:
        """Run ``attempt(deadline)`` until it succeeds, fails permanently, or retries or time run out."""
        limit = self.pacer.clock() + FINDING_DEADLINE
        if deadline is not None:
            limit = min(limit, deadline)
        tries, last = 0, None
        while True:
            try:
                return attempt(limit)
            except DeadlineExceededError as exc:
                raise DeadlineExceededError(f"{exc}; last error: {last}" if last else str(exc)) from exc
            except RetriableError as exc:
                last = exc
                if exc.wait is not None:  # a 429: the pacer paused everyone; not an attempt
                    if exc.wait > MAX_SERVER_WAIT:  # a spent quota: fail this finding, pause nobody
                        raise
                    continue
                tries += 1
                if tries >= self.backoff.attempts:
                    raise
                self._back_off(tries, limit, exc)

    def _back_off(self, tries: int, deadline: float, exc: Exception) -> None:
        delay = self.backoff.delay(tries)
        if self.pacer.clock() + delay > deadline:
            raise DeadlineExceededError(f"retry {tries} would wait past the deadline; last error: {exc}") from exc
        log.info("retry %d after %.2fs: %s", tries, delay, exc)
        if delay > 0:
            self.sleep(delay)
