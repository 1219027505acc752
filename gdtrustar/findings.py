"""Shape detection and normalisation of GuardDuty findings.

A finding reaches gdtrustar in one of three dialects: an EventBridge event whose ``detail`` is the
finding in wire (camelCase) form, the wire JSON of ``GetFindings``, or boto3 / ``aws guardduty
get-findings`` output in PascalCase (with ``datetime`` objects from boto3). ``normalize`` turns
every dialect into one canonical camelCase dict so that the same finding yields a byte-identical
report whichever door it came through.

Key names are never guessed: the ``Finding`` shape of botocore's GuardDuty service model is
compiled once into per-shape lookup tables (member name, wire name and lower-first alias ->
wire name and child shape). Lower-casing would be wrong (``Latitude`` is ``lat`` on the wire,
``Code`` is ``productCodeId``, ``SourceIps`` is ``sourceIPs``). The same walk canonicalises
values: timestamps (ISO, epoch ms or seconds, scientific notation, ``datetime``) to ISO-8601 UTC
with milliseconds (``timestamps.py``), Double members to float, Integer/Long members to int, and
``service.additionalInfo`` to one free-form object whether it came flattened, wrapped as a ``value``
JSON string, or both (``freeform.py``). Nulls and empty strings, lists and objects are dropped: one
door sends them where another leaves the key out, and they say nothing.

A GuardDuty event that is not a finding (a Malware Protection Object Scan Result: no finding id)
raises ``NotAFindingError``, which callers count as skipped, not invalid.

The module does no I/O besides botocore's data loader reading the bundled model, once, lazily.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any, Callable, Iterator

from gdtrustar.errors import InvalidFindingError, NotAFindingError
from gdtrustar.freeform import additional_info, lower_first, plain, plain_number
from gdtrustar.text import unicode_problem
from gdtrustar.timestamps import CANONICAL_TIME, canonical_time

__all__ = ["canonical_time", "explode", "is_sample", "normalize"]

_MAX_DEPTH = 8  # how deep explode() follows nested arrays before handing the item over as-is
_REQUIRED = ("id", "type", "severity", "accountId", "region")
_PASCAL_KEYS = frozenset(("Id", "AccountId", "Type", "Severity", "Region", "Arn", "SchemaVersion"))
_CAMEL_KEYS = frozenset(("id", "accountId", "type", "severity", "region", "arn", "schemaVersion"))
_TIME_SUFFIXES = ("At", "Time", "Seen")
_EMPTY_SAYS_NOTHING = (list, dict, str)
_INT_TEXT = re.compile(r"-?\d{1,18}\Z", re.ASCII)
_FINDING_EVENT = "GuardDuty Finding"

# Shape kinds of the compiled model.
STRUCT, LIST, MAP, STRING, DOUBLE, INTEGER, BOOLEAN, TIME, ADDINFO, OTHER = range(10)
_KINDS = {"structure": STRUCT, "list": LIST, "map": MAP, "string": STRING, "double": DOUBLE,
          "float": DOUBLE, "integer": INTEGER, "long": INTEGER, "boolean": BOOLEAN, "timestamp": TIME}
_CANONICAL_CLASS = {STRING: str, DOUBLE: float, INTEGER: int, BOOLEAN: bool}  # values of this class are final


class _Shape:
    """One compiled model shape: its kind plus what is needed to walk a value of it."""

    __slots__ = ("kind", "members", "item", "final")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.members: dict[str, tuple[str, _Shape, int, type | None]] = {}  # STRUCT: key -> (wire, shape, ...)
        self.item: _Shape | None = None  # LIST member / MAP value
        self.final = _CANONICAL_CLASS.get(kind)  # a value of exactly this class is already canonical


_TIME_SHAPE = _Shape(TIME)
_ADDINFO_SHAPE = _Shape(ADDINFO)


@cache
def _finding_shape() -> _Shape:
    """Compile the model's ``Finding`` shape once; later calls are a cache hit."""
    from botocore.loaders import Loader  # the data loader only: no client, no network

    model = Loader().load_service_model("guardduty", "service-2")
    return _compile(model["shapes"], "Finding", {})


def _compile(shapes: dict, name: str, memo: dict[str, _Shape]) -> _Shape:
    if name in memo:  # shared (and potentially recursive) shapes are compiled once
        return memo[name]
    spec = shapes[name]
    if name == "ServiceAdditionalInfo":
        memo[name] = _ADDINFO_SHAPE
        return _ADDINFO_SHAPE
    shape = memo[name] = _Shape(_KINDS.get(spec["type"], OTHER))
    if shape.kind == LIST:
        shape.item = _compile(shapes, spec["member"]["shape"], memo)
    elif shape.kind == MAP:
        shape.item = _compile(shapes, spec["value"]["shape"], memo)
    elif shape.kind == STRUCT:
        shape.members = _struct_table(shapes, spec["members"], memo)
    return shape


def _struct_table(shapes: dict, members: dict, memo: dict[str, _Shape]) -> dict[str, tuple]:
    """Map every key a member may arrive under to (wire name, shape, kind, canonical class).

    Wire names win over member names, which win over lower-first aliases, so an alias can never
    steal another member's wire name.
    """
    entries = []
    for member, spec in members.items():
        wire = spec.get("jsonName") or spec.get("locationName") or member
        child = _compile(shapes, spec["shape"], memo)
        if child.kind == STRING and wire.endswith(_TIME_SUFFIXES):
            child = _TIME_SHAPE  # String-typed times (createdAt, eventFirstSeen, launchTime, ...)
        entries.append((member, wire, child))
    table: dict[str, tuple] = {}
    picks: tuple[Callable[[str, str], str], ...] = (lambda m, w: w, lambda m, w: m, lambda m, w: m[:1].lower() + m[1:])
    for pick in picks:
        for member, wire, child in entries:
            table.setdefault(pick(member, wire), (wire, child, child.kind, child.final))
    return table


def _walk(value: Any, shape: _Shape, pascal: bool) -> Any:
    """Canonicalise ``value`` against ``shape``; values of an unexpected type are carried."""
    if value.__class__ is Decimal:  # json.loads(parse_float=Decimal), DynamoDB: the number json.loads gives
        value = plain_number(value)
    kind = shape.kind
    if kind == STRUCT:
        return _walk_struct(value, shape, pascal) if isinstance(value, dict) else plain(value, pascal)
    if kind == STRING:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # EventBridge sends e.g. organization.asn as -1, the API as "-1"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # the same number written as 16509.0
        return value if isinstance(value, str) else plain(value, pascal)
    if kind == LIST:
        item = shape.item  # set for every LIST shape
        if item is not None and isinstance(value, (list, tuple)):
            final = item.final
            if item.kind == STRUCT:
                return [_walk_struct(element, item, pascal) if element.__class__ is dict
                        else _walk(element, item, pascal) for element in value]
            return [element if element.__class__ is final else _walk(element, item, pascal) for element in value]
        return plain(value, pascal)
    if kind == DOUBLE:
        return _double(value, pascal)
    if kind == INTEGER:
        return _integer(value, pascal)
    if kind == TIME:
        return canonical_time(value) or plain(value, pascal)
    if kind == MAP:
        item = shape.item  # set for every MAP shape
        if item is not None and isinstance(value, dict):  # map keys are data: never renamed
            return {str(key): _walk(element, item, pascal) for key, element in value.items()}
        return plain(value, pascal)
    if kind == BOOLEAN and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == ADDINFO:
        return additional_info(value)
    return plain(value, pascal)


def _double(value: Any, pascal: bool) -> Any:
    """Double members are floats on every door (EventBridge writes 5, the API 5.0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # a 400-digit "severity": carried as is, then rejected by validation
            return value
    return plain(value, pascal)


def _integer(value: Any, pascal: bool) -> Any:
    """Integer and Long members are ints on every door (1.0, 1E0 or "1" are the API's 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value):
        return int(value)
    return plain(value, pascal)


def _walk_struct(value: dict, shape: _Shape, pascal: bool) -> dict:
    members = shape.members
    out = {}
    for key, element in value.items():
        if element is None:  # EventBridge sends nulls that boto3 and the wire JSON leave out
            continue
        entry = members.get(key)
        if entry is None:  # a member newer than our model: carry it
            key = str(key)
            element = plain(element, pascal)
            if element or element.__class__ not in _EMPTY_SAYS_NOTHING:
                out[lower_first(key) if pascal else key] = element
            continue
        wire, shape, kind, final = entry
        # Inlined common cases (canonical scalars, nested objects): this loop is the hot path of a run.
        # An empty string, list or object says nothing, and one door sends it where another leaves the key out.
        if element.__class__ is final:
            if element or final is not str:
                out[wire] = element
            continue
        if kind == STRUCT and element.__class__ is dict:
            element = _walk_struct(element, shape, pascal)
        else:
            element = _walk(element, shape, pascal)
        if element or element.__class__ not in _EMPTY_SAYS_NOTHING:
            out[wire] = element
    return out


def _reject_event(doc: dict) -> dict:
    """Return the finding inside an EventBridge event, or say why there is none."""
    detail_type, source, detail = doc.get("detail-type"), doc.get("source"), doc.get("detail")
    if detail_type != _FINDING_EVENT or source != "aws.guardduty":
        if source == "aws.guardduty" and isinstance(detail, dict) and not _finding_like(detail):
            raise NotAFindingError(f"not a finding: a {_quoted(detail_type)} event ({_what(detail)})")
        raise InvalidFindingError(f"not a GuardDuty finding event (detail-type {detail_type!r}, source {source!r})")
    if not isinstance(detail, dict):
        raise InvalidFindingError(f"EventBridge event has no 'detail' object (got {type(detail).__name__})")
    return detail


def _finding_like(doc: dict) -> bool:
    return "id" in doc or "Id" in doc  # the one field no finding lacks and no other GuardDuty event has


def _quoted(text: Any) -> str:
    return f'"{text}"' if isinstance(text, str) else repr(text)


def _what(detail: dict) -> str:
    """A short, safe description of a GuardDuty non-finding event's subject (for the skip line)."""
    s3_object = detail.get("s3ObjectDetails")
    result = detail.get("scanResultDetails")
    parts = []
    if isinstance(s3_object, dict):
        parts.append(f"s3://{s3_object.get('bucketName', '?')}/{s3_object.get('objectKey', '?')}"[:200])
    if isinstance(result, dict) and isinstance(result.get("scanResultStatus"), str):
        parts.append(result["scanResultStatus"][:40])
    return ", ".join(parts) or "no finding id"


def _dialect(doc: Any) -> tuple[dict, bool]:
    """Return (bare finding, is PascalCase) or raise with the reason it is not a finding."""
    if not isinstance(doc, dict):
        raise InvalidFindingError(f"expected a JSON object (a finding or event), got {type(doc).__name__}")
    if "detail-type" in doc or ("detail" in doc and "source" in doc):
        doc = _reject_event(doc)
    elif isinstance(doc.get("scanResultDetails"), dict) and not _finding_like(doc):  # a bare scan result
        raise NotAFindingError(f"not a finding: a Malware Protection object scan result ({_what(doc)})")
    pascal_hits = len(_PASCAL_KEYS.intersection(doc))
    camel_hits = len(_CAMEL_KEYS.intersection(doc))
    if pascal_hits == camel_hits == 0:
        for key in ("Findings", "findings"):
            if isinstance(doc.get(key), list):
                raise InvalidFindingError(
                    f"a GetFindings response ({len(doc[key])} findings), not a finding: explode it first")
        keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
        raise InvalidFindingError(f"no GuardDuty finding fields (id, type, severity, ...); keys: {keys}")
    return doc, pascal_hits > camel_hits


def normalize(candidate: Any) -> dict:
    """Return the canonical camelCase finding or raise InvalidFindingError(reason).

    Accepts an EventBridge event, a bare wire (camelCase) finding or a boto3 / CLI (PascalCase)
    finding; all three yield equal dicts for the same finding.
    """
    doc, pascal = _dialect(candidate)
    try:
        finding = _walk_struct(doc, _finding_shape(), pascal)
    except RecursionError:
        raise InvalidFindingError("finding is nested too deeply") from None
    missing = [name for name in _REQUIRED if finding.get(name) in (None, "")]
    if missing:
        raise InvalidFindingError(f"missing required field(s): {', '.join(missing)}")
    for name in ("id", "type", "accountId", "region"):
        if not isinstance(finding[name], str):
            raise InvalidFindingError(f"{name} must be a string, got {type(finding[name]).__name__}")
    severity = finding["severity"]
    if isinstance(severity, bool) or not isinstance(severity, float) or not 0.0 <= severity <= 10.0:
        raise InvalidFindingError(f"severity must be a number from 0 to 10, got {severity!r}")
    for name in ("createdAt", "updatedAt"):
        stamp = finding.get(name)
        if stamp is not None and not (isinstance(stamp, str) and CANONICAL_TIME.match(stamp)):
            raise InvalidFindingError(f"{name} is not a recognisable time: {stamp!r}"[:300])
    service = finding.get("service")
    first_seen = service.get("eventFirstSeen") if isinstance(service, dict) else None
    if isinstance(first_seen, str) and not CANONICAL_TIME.match(first_seen):  # the report's timeBegan
        raise InvalidFindingError(f"service.eventFirstSeen is not a recognisable time: {first_seen!r}"[:300])
    problem = unicode_problem(finding)  # a lone surrogate cannot be stored, printed or sent
    if problem:
        raise InvalidFindingError(problem)
    return finding


def explode(doc: Any, _where: str = "", _depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Yield (where, candidate) for every finding-like item in one parsed JSON document.

    Lists yield their elements (``[i]``, recursively up to a bounded depth), GetFindings output
    in boto3/CLI (``Findings``) or wire (``findings``) form yields ``Findings[i]``, and a
    failures-file record ``{"failure": ..., "finding": ...}`` yields its finding, so a failures
    file can be replayed as-is. Anything else is yielded whole for ``normalize`` to judge.
    """
    if isinstance(doc, list) and _depth < _MAX_DEPTH:
        for index, element in enumerate(doc):
            yield from explode(element, f"{_where}[{index}]", _depth + 1)
        return
    if isinstance(doc, dict):
        for key in ("Findings", "findings"):
            if isinstance(doc.get(key), list):
                for index, element in enumerate(doc[key]):
                    yield f"{_where}{key}[{index}]", element
                return
        if "failure" in doc and ("finding" in doc or "document" in doc):  # a failures-file record
            yield _where, doc["finding"] if "finding" in doc else doc["document"]
            return
    yield _where, doc


def is_sample(finding: dict) -> bool:
    """True when GuardDuty flagged the (normalised) finding as a generated sample.

    Only ``service.additionalInfo.sample`` counts: a ``[SAMPLE]`` title alone is user-editable text.
    """
    info = _get(finding, "service", "additionalInfo")
    flag = info.get("sample") if isinstance(info, dict) else None
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
