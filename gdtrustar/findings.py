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
values: timestamps to ISO-8601 UTC with milliseconds, Double members to float, and
``service.additionalInfo`` to its free-form object.

The module does no I/O besides botocore's data loader reading the bundled model, once, lazily.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from functools import cache, lru_cache
from typing import Any, Iterator

from gdtrustar.errors import InvalidFindingError

_MAX_DEPTH = 8  # how deep explode() follows nested arrays before handing the item over as-is
_REQUIRED = ("id", "type", "severity", "accountId", "region")
_PASCAL_KEYS = frozenset(("Id", "AccountId", "Type", "Severity", "Region", "Arn", "SchemaVersion"))
_CAMEL_KEYS = frozenset(("id", "accountId", "type", "severity", "region", "arn", "schemaVersion"))
_TIME_SUFFIXES = ("At", "Time", "Seen")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
_ISO_TIME = re.compile(
    r"\s*(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?)?\s*"
    r"(Z|z|UTC|[+-]\d\d(?::?\d\d)?)?\s*\Z"
)
_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?\s*\Z")

# Shape kinds of the compiled model.
STRUCT, LIST, MAP, STRING, DOUBLE, INTEGER, BOOLEAN, TIME, ADDINFO, OTHER = range(10)
_KINDS = {"structure": STRUCT, "list": LIST, "map": MAP, "string": STRING, "double": DOUBLE,
          "float": DOUBLE, "integer": INTEGER, "long": INTEGER, "boolean": BOOLEAN, "timestamp": TIME}


class _Shape:
    """One compiled model shape: its kind plus what is needed to walk a value of it."""

    __slots__ = ("kind", "members", "item")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.members: dict[str, tuple[str, _Shape, int]] = {}  # STRUCT: accepted key -> (wire, shape, kind)
        self.item: _Shape | None = None  # LIST member / MAP value


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


def _struct_table(shapes: dict, members: dict, memo: dict[str, _Shape]) -> dict[str, tuple[str, _Shape, int]]:
    """Map every key a member may arrive under to (wire name, shape).

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
    table: dict[str, tuple[str, _Shape, int]] = {}
    for pick in (lambda m, w: w, lambda m, w: m, lambda m, w: m[:1].lower() + m[1:]):
        for member, wire, child in entries:
            table.setdefault(pick(member, wire), (wire, child, child.kind))
    return table


def _lower_first(key: str) -> str:
    return key[:1].lower() + key[1:]


def canonical_time(value: Any) -> str | None:
    """Return ``value`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), or None if it is not a time.

    Accepts ISO strings (``Z``, offsets, or a space and no zone, meaning UTC), epoch
    milliseconds or seconds (int, float or digit string; > 1e11 means milliseconds) and
    ``datetime`` objects (naive means UTC).
    """
    if isinstance(value, str):
        return _time_from_string(value)
    if isinstance(value, datetime):
        return _format(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _time_from_epoch(value)
    return None


@lru_cache(maxsize=4096)
def _time_from_string(text: str) -> str | None:
    if _CANONICAL_TIME.match(text):
        return text
    if _NUMBER.match(text):
        return _time_from_epoch(float(text))
    match = _ISO_TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                          int(second or 0), int((fraction or "0")[:6].ljust(6, "0")), timezone.utc)
    except ValueError:
        return None
    if zone and zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        moment = moment - offset if zone[0] == "+" else moment + offset
    return _format(moment)


def _time_from_epoch(number: float) -> str | None:
    try:
        seconds = number / 1000.0 if abs(number) > 1e11 else float(number)
        return _format(_EPOCH + timedelta(seconds=seconds))
    except (OverflowError, ValueError):  # huge integers, NaN, infinity
        return None


def _format(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond // 1000:03d}Z")


def _walk(value: Any, shape: _Shape, pascal: bool) -> Any:
    """Canonicalise ``value`` against ``shape``; values of an unexpected type are carried."""
    kind = shape.kind
    if kind == STRUCT:
        return _walk_struct(value, shape, pascal) if isinstance(value, dict) else _plain(value, pascal)
    if kind == STRING:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # EventBridge sends e.g. organization.asn as -1, the API as "-1"
        return value if isinstance(value, str) else _plain(value, pascal)
    if kind == LIST:
        if isinstance(value, (list, tuple)):
            item = shape.item
            return [_walk(element, item, pascal) for element in value]
        return _plain(value, pascal)
    if kind == DOUBLE:
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # a 400-digit "severity": carried as is, then rejected by validation
                return value
        return _plain(value, pascal)
    if kind == INTEGER:
        return int(value) if isinstance(value, float) and value.is_integer() else _plain(value, pascal)
    if kind == TIME:
        return canonical_time(value) or _plain(value, pascal)
    if kind == MAP:
        if isinstance(value, dict):  # map keys are data: never renamed
            item = shape.item
            return {str(key): _walk(element, item, pascal) for key, element in value.items()}
        return _plain(value, pascal)
    if kind == BOOLEAN and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == ADDINFO:
        return _additional_info(value)
    return _plain(value, pascal)


def _walk_struct(value: dict, shape: _Shape, pascal: bool) -> dict:
    members = shape.members
    out = {}
    for key, element in value.items():
        if element is None:  # EventBridge sends nulls that boto3 and the wire JSON leave out
            continue
        entry = members.get(key)
        if entry is None:  # a member newer than our model: carry it
            key = str(key)
            out[_lower_first(key) if pascal else key] = _plain(element, pascal)
        else:
            wire, shape, kind = entry
            # Inlined common cases (strings, nested objects): this loop is the hot path of a run.
            if kind == STRING and element.__class__ is str:
                out[wire] = element
            elif kind == STRUCT and element.__class__ is dict:
                out[wire] = _walk_struct(element, shape, pascal)
            else:
                out[wire] = _walk(element, shape, pascal)
    return out


MAX_FREE_DEPTH = 64


def _plain(value: Any, pascal: bool, rename: bool = True, depth: int = 0) -> Any:
    """Make a value without a model shape JSON-safe (lower-first keys for PascalCase input).

    Free-form data (unknown members, additionalInfo) is the only unbounded nesting in a finding;
    real findings stay far below ``MAX_FREE_DEPTH``, and deeper input would break every later step.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth > MAX_FREE_DEPTH:
        raise InvalidFindingError(f"finding is nested too deeply (over {MAX_FREE_DEPTH} levels of free-form data)")
    depth += 1
    if isinstance(value, dict):
        fix = _lower_first if pascal and rename else str
        return {fix(str(key)): _plain(element, pascal, rename, depth) for key, element in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(element, pascal, rename, depth) for element in value]
    if isinstance(value, (set, frozenset)):  # not JSON; sorted so the output stays deterministic
        return sorted((_plain(element, pascal, rename, depth) for element in value), key=str)
    if isinstance(value, datetime):
        return _format(value)
    return str(value)


def _additional_info(value: Any) -> Any:
    """Return additionalInfo as its free-form object (the API wraps it in a JSON string)."""
    if not isinstance(value, dict):
        return _plain(value, False)
    keys = set(value)
    if keys and keys <= {"Value", "Type"} | {"value", "type"} and isinstance(
            value.get("Value", value.get("value")), str):
        raw = value.get("Value", value.get("value"))
        kind = value.get("Type", value.get("type"))
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return _plain(parsed, False)
        return {"value": raw, "type": _plain(kind, False)}
    return _plain(value, False, rename=False)  # the inner keys are data


def _reject_event(doc: dict) -> dict:
    """Return the finding inside an EventBridge event, or say why there is none."""
    detail_type = doc.get("detail-type")
    if detail_type != "GuardDuty Finding" or doc.get("source") != "aws.guardduty":
        raise InvalidFindingError(
            f"not a GuardDuty finding event (detail-type {detail_type!r}, source {doc.get('source')!r})")
    detail = doc.get("detail")
    if not isinstance(detail, dict):
        raise InvalidFindingError(f"EventBridge event has no 'detail' object (got {type(detail).__name__})")
    return detail


def _dialect(doc: Any) -> tuple[dict, bool]:
    """Return (bare finding, is PascalCase) or raise with the reason it is not a finding."""
    if not isinstance(doc, dict):
        raise InvalidFindingError(f"expected a JSON object (a finding or event), got {type(doc).__name__}")
    if "detail-type" in doc or ("detail" in doc and "source" in doc):
        doc = _reject_event(doc)
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
        if stamp is not None and not (isinstance(stamp, str) and _CANONICAL_TIME.match(stamp)):
            raise InvalidFindingError(f"{name} is not a recognisable time: {stamp!r}")
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
