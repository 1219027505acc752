"""Process exit codes: a contract with scripts and schedulers."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Why gdtrustar exited."""

    SUCCESS = 0  # every finding delivered (created, updated, unchanged or skipped)
    UNDELIVERED = 1  # some findings invalid or failed: listed in the failures file
    ERROR = 2  # usage or configuration error: nothing was attempted
    INTERRUPTED = 130  # Ctrl-C: in-flight writes finished, ledger committed
