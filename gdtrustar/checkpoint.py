"""Checkpoints: how a source learns that a unit of its input was delivered, without the engine knowing.

A source groups its items into units it can acknowledge: an S3 export object, a detector's
backfill listing, a queue message. It ``hold``s each item it hands the engine in the unit's
``Checkpoint`` (the item's opaque ``receipt``) and ``seal``s the unit once it has handed over the
last one. The engine ``settle``s each item's receipt when every enclave's outcome is in. When the
unit is sealed and every item settled as handled, ``on_done`` runs once, on the engine's thread
(which owns the ledger): the S3 source remembers the object, backfill moves its bookmark, a queue
source would delete the message.

The rule for "handled": an item is handled when each of its outcomes is ``created``,
``updated``, ``unchanged`` or ``skipped``. ``invalid`` and ``failed`` are not, even though the
failures file lists them: a unit acknowledged with such an item would never be read again, and
its findings would live only in a failures file (for an S3 object, a finding that a fixed mapper
or IAM policy could deliver on the next run would be skipped for ever). ``dry-run`` is not
either: nothing was delivered. A unit that is never sealed (Ctrl-C, a crash, a listing cut
short) is never acknowledged, so the next run reads it again and the ledger turns what was
already delivered into ``unchanged``, at no Station call.

``on_done`` learns whether the unit was delivered *completely*: nothing in it was left out by a
user's filter (``--since``, ``--type``, ``--exclude-samples``, ...). The S3 source remembers only
complete objects, so a later run with wider filters still reads the rest.

Acknowledgements that write to the ledger are committed with the engine's next batch, after the
rows of the findings they vouch for (the same transaction or a later one): a crash can lose an
acknowledgement, which costs a re-read, but never keeps one whose findings were lost.
"""

from __future__ import annotations

from typing import Callable, Optional

from gdtrustar.actions import Action
from gdtrustar.items import Item

HANDLED = frozenset((Action.CREATED, Action.UPDATED, Action.UNCHANGED, Action.SKIPPED))


class Checkpoint:
    """One acknowledgeable unit of a source's input; see the module docstring."""

    def __init__(self, on_done: Callable[[bool], None], name: str = "") -> None:
        self.name = name
        self._on_done = on_done
        self._open = 0
        self._sealed = False
        self._handled = True
        self._complete = True
        self.acknowledged = False

    def hold(self, item: Item) -> Item:
        """Attach this checkpoint to an item before the source hands it over."""
        self._open += 1
        item.receipt = self
        return item

    def narrow(self) -> None:
        """An item of this unit was left out by a user's filter: the unit is not complete."""
        self._complete = False

    def settle(self, handled: bool, narrowed: bool = False) -> None:
        """The engine is done with one held item (every enclave's outcome is in)."""
        self._open -= 1
        self._handled = self._handled and handled
        self._complete = self._complete and not narrowed
        self._maybe_done()

    def fail(self) -> None:
        """Part of the unit could not even be read into items: it can never be acknowledged."""
        self._handled = False

    def seal(self) -> None:
        """The source has handed over every item of the unit."""
        self._sealed = True
        self._maybe_done()

    @property
    def settled(self) -> bool:
        return self._sealed and self._open == 0

    def _maybe_done(self) -> None:
        if self.settled and self._handled and not self.acknowledged:
            self.acknowledged = True
            self._on_done(self._complete)


def delivery_scope(enclave_ids: tuple[str, ...], extra: Optional[str] = None) -> str:
    """What an acknowledgement is valid for besides the Station: these enclaves (in any order)."""
    scope = ",".join(sorted(enclave_ids))
    return f"{scope}|{extra}" if extra else scope
