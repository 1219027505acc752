"""Every exception gdtrustar raises, grouped by how the caller recovers.

* ``ConfigError`` is fatal for the run (exit 2): nothing can be delivered until the user fixes it.
* ``SourceUnavailableError`` ends the run (exit 1): the input (GuardDuty) failed transiently.
* ``InvalidFindingError`` is skippable: one document is reported ``invalid`` and the run goes on.
* ``NotAFindingError`` marks a well-formed document that is deliberately not a finding (a GuardDuty
  Malware Protection Object Scan Result event): it is reported ``skipped`` with its reason, never
  ``invalid``, and is not listed in the failures file. It subclasses ``InvalidFindingError`` so a
  caller that does not know it still keeps the document (as invalid) instead of crashing.
* ``RetriableError`` / ``PermanentDeliveryError`` come from the Station boundary: the first may
  succeed if repeated (429, 5xx, dropped connections), the second will not (4xx other than 429).
  A ``RetriableError`` with a ``wait`` is a 429: flow control, paced, never an attempt.
* ``EndpointMissingError`` tells the Station client to switch to its look-up-then-write fallback.

Foreign exceptions are wrapped where they enter (``raise ... from exc``) so the delivery engine
only ever handles these types.
"""

from __future__ import annotations


class GdTrustarError(Exception):
    """Base class for all gdtrustar errors."""


class ConfigError(GdTrustarError):
    """Settings are missing or wrong (credentials, enclave permissions, AWS access)."""


class SourceUnavailableError(GdTrustarError):
    """Reading findings failed on a transient error (throttling, 5xx, network) after the SDK's retries.

    What was read is delivered or listed; the rest was not read, so a rerun resumes (exit 1).
    """


class InvalidFindingError(GdTrustarError):
    """A document is not a GuardDuty finding we can map; the message says why."""


class NotAFindingError(InvalidFindingError):
    """A document GuardDuty sends that is not a finding (no finding id): skip it; the message says what it is."""


class DeliveryError(GdTrustarError):
    """A report could not be written to Station."""


class RetriableError(DeliveryError):
    """The call may succeed if repeated; ``wait`` is the server's requested pause in seconds."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class DeadlineExceededError(RetriableError):
    """The next wait (pacing, a 429 pause, back-off) would end after the write's deadline; nothing slept."""


class TokenRefusedError(RetriableError):
    """Station refused fresh OAuth tokens as expired or invalid, more times in a row than one call allows."""


class InterruptedWaitError(DeliveryError):
    """The run was stopped (Ctrl-C) while this write waited for its turn; it was not sent."""


class PermanentDeliveryError(DeliveryError):
    """Station rejected the call; repeating it cannot help. ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EndpointMissingError(DeliveryError):
    """Station does not implement the upsert endpoint."""


class StationUnavailableError(DeliveryError):
    """Station could not be reached at start (or kept failing): the run's findings are not attempted."""


class DeployError(GdTrustarError):
    """Building or deploying the Lambda failed (pip, S3, Secrets Manager, CloudFormation); fatal."""
