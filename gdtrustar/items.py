"""Items: what sources hand the delivery engine, one normalised finding or the reason there is none.

``build_item`` is the one builder every source uses; it never raises. A document that is not a
finding by design (``NotAFindingError``, e.g. a Malware Protection scan result) is a ``skipped`` item.

Sources (files, the GuardDuty API) turn their input into ``Item``s; the engine in ``delivery.py``
turns items into outcomes and does not know where an item came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

from gdtrustar.errors import InvalidFindingError, NotAFindingError
from gdtrustar.findings import explode, normalize
from gdtrustar.sources import Document


@dataclass
class Item:
    """One finding-to-be (normalised) or the reason it cannot be one, with its origin."""

    origin: str
    finding: Optional[dict] = None
    error: Optional[str] = None
    document: Any = None
    skipped: bool = False  # not a finding by design (NotAFindingError): counted skipped, never listed


def items_from(documents: Iterable[Document]) -> Iterator[Item]:
    """Normalise every finding in every document; bad ones become invalid items, never exceptions."""
    for doc in documents:
        if doc.error is not None:
            yield Item(doc.origin, error=doc.error)
            continue
        for where, candidate in explode(doc.value):
            origin = f"{doc.origin}{where and ' ' + where}"
            yield build_item(origin, candidate)


def build_item(origin: str, candidate: Any) -> Item:
    """The one hostile-input-safe item builder (``send``, ``backfill``, the Lambda): it never raises."""
    replayed = _replayed_failure(candidate)
    if replayed:
        return Item(origin, error=replayed)
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
    """A failures-file line for input that never was a finding keeps its original reason on replay."""
    if isinstance(candidate, dict) and isinstance(candidate.get("failure"), dict) and len(candidate) == 1:
        failure = candidate["failure"]
        return str(failure.get("error") or "listed as undeliverable in a failures file")
    return None
