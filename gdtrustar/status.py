"""Process exit codes: a contract with scripts and schedulers."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Why gdtrustar exited."""

    SUCCESS = 0  # every finding delivered (created, updated, unchanged or skipped)
    UNDELIVERED = 1  # some findings invalid or failed (listed in the failures file), or a source failed transiently
    ERROR = 2  # usage or configuration error: nothing was attempted
    UNEXPECTED = 3  # a bug or an environment failure: one line, traceback in a crash log; findings read are listed
    INTERRUPTED = 130  # Ctrl-C: in-flight writes finished, ledger committed
    OUTPUT_CLOSED = 141  # stdout closed (`| head`): stopped like Ctrl-C, quietly, as a writer killed by SIGPIPE
