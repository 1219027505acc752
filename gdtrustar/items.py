"""Items: what sources hand the delivery engine, one normalised finding or the reason there is none.

``build_item`` is the one builder every source uses; it never raises. A document that is not a
finding by design (``NotAFindingError``, e.g. a Malware Protection scan result) is a ``skipped`` item.

Sources (files and stdin, the GuardDuty API, the S3 export) turn their input into ``Item``s; the
engine in ``delivery.py`` turns items into outcomes and does not know where an item came from.
An item may carry a ``receipt``, an opaque handle the engine settles once the item's outcomes are
in; that is how a source acknowledges what was delivered (``checkpoint.py``).

A source that could not read part of its input at all (an S3 object whose key is refused) says
so with an invalid item whose document is a *re-read reference*, ``{"reread": "<source>"}``. The
failures file keeps it, and replaying that file reads the named source again when the command
can (``items_from(..., expand=...)``), so nothing that was never read is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

from gdtrustar.errors import InvalidFindingError, NotAFindingError
from gdtrustar.findings import explode, normalize
from gdtrustar.sources import Document, Unparsed


class Receipt(Protocol):
    """What the engine may do with an item's receipt: settle it once, when its outcomes are in."""

    def settle(self, handled: bool, narrowed: bool = False) -> None:
        """``handled``: every outcome delivered or skipped; ``narrowed``: a user's filter left it out."""


@dataclass
class Item:
    """One finding-to-be (normalised) or the reason it cannot be one, with its origin."""

    origin: str
    finding: Optional[dict] = None
    error: Optional[str] = None
    document: Any = None
    skipped: bool = False  # not a finding by design (NotAFindingError): counted skipped, never listed
    receipt: Optional[Receipt] = field(default=None, repr=False, compare=False)


Expand = Callable[[str, str], Iterable[Item]]  # (source to read again, origin of the reference) -> items


def reread_reference(source: str) -> dict:
    """The document of an invalid item for input that could not be read: replay reads ``source`` again."""
    return {"reread": source}


def _reread_target(candidate: Any) -> Optional[str]:
    target = candidate.get("reread") if isinstance(candidate, dict) and len(candidate) == 1 else None
    return target if isinstance(target, str) else None


def items_from(documents: Iterable[Document], expand: Optional[Expand] = None) -> Iterator[Item]:
    """Normalise every finding in every document; bad ones become invalid items, never exceptions.

    ``expand`` reads a re-read reference again (e.g. an S3 object a failures file names); without
    it, or for a source it does not know, the reference stays an invalid item.
    """
    for doc in documents:
        if doc.error is not None:
            yield Item(doc.origin, error=doc.error, document=doc.raw)
            continue
        for where, candidate in explode(doc.value):
            origin = f"{doc.origin}{where and ' ' + where}"
            target = _reread_target(candidate)
            if target is not None and expand is not None:
                yield from expand(target, origin)
            else:
                yield build_item(origin, candidate)


def build_item(origin: str, candidate: Any) -> Item:
    """The one hostile-input-safe item builder (``send``, ``backfill``, the Lambda): it never raises."""
    replayed = _replayed_failure(candidate)
    if replayed:
        raw = candidate.get("raw")
        return Item(origin, error=replayed, document=Unparsed(raw) if isinstance(raw, str) else None)
    target = _reread_target(candidate)
    if target is not None:
        return Item(origin, error=f"not read: {target} (read it again with: gdtrustar send {target})",
                    document=candidate)
    try:
        return Item(origin, finding=normalize(candidate))
    except NotAFindingError as exc:
        return Item(origin, error=str(exc), skipped=True)
    except InvalidFindingError as exc:
        return Item(origin, error=str(exc), document=candidate)
    except RecursionError:
        return Item(origin, error="document nested too deeply")
    except Exception as exc:  # whatever a hostile document provokes, the run goes on
        return Item(origin, error=f"cannot read finding: {type(exc).__name__}: {exc}"[:300], document=candidate)


def _replayed_failure(candidate: Any) -> Optional[str]:
    """A failures-file line for input that never was a finding keeps its original reason on replay.

    Such a line holds the failure alone, or with the ``raw`` text that could not be parsed.
    """
    if isinstance(candidate, dict) and isinstance(candidate.get("failure"), dict) and set(candidate) <= {
            "failure", "raw"}:
        failure = candidate["failure"]
        return str(failure.get("error") or "listed as undeliverable in a failures file")
    return None
