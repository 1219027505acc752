"""The words for what happened: delivery actions and ledger decisions, as ``str``-valued enums.

An ``Action`` is what became of one finding in one enclave; its value is a contract (the ``action``
key of every ``--json`` record and failures-file entry, the summary's counts). A ``Decision`` is
the ledger's verdict on a finding before any write (``ledger.decide``).

Members are strings: ``Action.CREATED == "created"``, ``json.dumps`` writes ``"created"``, and
``str()`` and f-strings give the value on every Python version (3.12 made ``format()`` of a
mixed-in enum follow ``__str__``, which is ``Enum.__str__`` unless overridden, as here).
"""

from __future__ import annotations

import enum


class _Word(str, enum.Enum):
    """A ``str`` enum whose text is its value everywhere (``enum.StrEnum`` needs Python 3.11)."""

    def __str__(self) -> str:  # format() and f-strings follow it on every version
        return str.__str__(self)


class Action(_Word):
    """What happened to one finding in one enclave."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # the ledger says Station already has this report: no call
    SKIPPED = "skipped"  # left out on purpose (--exclude-samples), or a document that is not a finding
    DRY_RUN = "dry-run"
    INVALID = "invalid"  # not a finding we can deliver: listed in the failures file
    FAILED = "failed"  # Station did not take it: listed in the failures file
    QUEUED = "queued"  # backfill --via-queue: in the stack's buffer queue, for its function to deliver


class Decision(_Word):
    """The ledger's verdict on a finding against what was delivered before."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


#: What the delivery engine can say, in the summary's order (``queued`` is ``backfill --via-queue``'s alone).
ENGINE_ACTIONS = tuple(action for action in Action if action is not Action.QUEUED)

# Not delivered: each is one line on stderr and one entry in the failures file, and the run exits 1.
UNDELIVERED = frozenset((Action.INVALID, Action.FAILED))
