"""Free-form parts of a finding, the values the service model does not describe.

``plain`` makes any value JSON-safe and deterministic. ``additional_info`` gives
``service.additionalInfo`` one form whichever door the finding came through:

* the API (boto3, ``GetFindings``) wraps it: ``{"Value": "<JSON object>", "Type": "default"}``;
* EventBridge events and GuardDuty's S3 export may carry it twice, flattened *and* wrapped:
  ``{"threatListName": "x", "sample": true, "value": "{...the same as JSON...}", "type": "default"}``;
* or flattened only, a plain object.

The wrapper's JSON is decoded and merged over the flattened keys (the decoded object is what the API
holds, so it wins a disagreement), and ``type: default`` is dropped. A non-default type is kept, as
``type`` or, when the object has its own ``type``, as ``additionalInfoType``, so it stays visible and
every door shows it the same way. A ``value`` that is not a JSON object is left as it came.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Optional

from gdtrustar.errors import InvalidFindingError
from gdtrustar.timestamps import format_time

MAX_FREE_DEPTH = 64
_UNWRAP_DEPTH = 4  # a wrapper inside a wrapper is decoded too, this many times at most
_WRAPPERS = (("value", "type"), ("Value", "Type"))


def lower_first(key: str) -> str:
    """``ThreatListName`` -> ``threatListName``: the camelCase key of a PascalCase one."""
    return key[:1].lower() + key[1:]


def plain(value: Any, pascal: bool, rename: bool = True, depth: int = 0) -> Any:
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
        fix: Callable[[str], str] = lower_first if pascal and rename else str
        return {fix(str(key)): plain(element, pascal, rename, depth) for key, element in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(element, pascal, rename, depth) for element in value]
    if isinstance(value, (set, frozenset)):  # not JSON; sorted so the output stays deterministic
        return sorted((plain(element, pascal, rename, depth) for element in value), key=str)
    if isinstance(value, datetime):
        return format_time(value) or value.isoformat()
    if isinstance(value, Decimal):  # a JSON parser with parse_float=Decimal: the number json.loads would give
        return plain_number(value)
    return str(value)


def plain_number(value: Decimal) -> Any:
    """A Decimal as the int or float ``json.loads`` gives for the same text (NaN/infinity as text)."""
    if not value.is_finite():
        return str(value)
    return int(value) if value.as_tuple().exponent == 0 else float(value)  # "5" int; "5.0", "1E+2" float


def additional_info(value: Any, depth: int = 0) -> Any:
    """Return ``service.additionalInfo`` as one free-form object, whatever form it came in."""
    if not isinstance(value, dict):
        return plain(value, False)
    wrapped = _wrapper(value)
    if wrapped is None:
        return plain(value, False, rename=False)  # the inner keys are data
    value_key, type_key, decoded = wrapped
    kind = plain(value.get(type_key), False)
    if decoded is None:  # not a JSON object: keep it as it came, under the camelCase names
        out = {key: plain(element, False, rename=False) for key, element in value.items()
               if key not in (value_key, type_key)}
        out["value"] = value[value_key]
        if type_key in value:
            out["type"] = kind
        return out
    out = {key: plain(element, False, rename=False) for key, element in value.items()
           if key not in (value_key, type_key)}
    inner = additional_info(decoded, depth + 1) if depth < _UNWRAP_DEPTH else plain(decoded, False, False)
    out.update(inner if isinstance(inner, dict) else {})
    if kind is not None and kind != "default":
        out["additionalInfoType" if "type" in out and out["type"] != kind else "type"] = kind
    return out


def _wrapper(value: dict) -> Optional[tuple[str, str, Optional[dict]]]:
    """(value key, type key, decoded object or None) if ``value`` holds the API's JSON-string wrapper.

    A ``value`` string counts as the wrapper when a ``type`` sits beside it (the wrapper always has
    both), or when it is alone; otherwise ``value`` is just a key of the free-form data.
    """
    for value_key, type_key in _WRAPPERS:
        raw = value.get(value_key)
        if not isinstance(raw, str) or not (type_key in value or len(value) == 1):
            continue
        if value_key == "Value" and not set(value) <= {"Value", "Type"}:
            continue  # only boto3 writes PascalCase, and boto3 keeps nothing else
        try:
            decoded = json.loads(raw)
        except (ValueError, RecursionError):
            decoded = None
        return value_key, type_key, decoded if isinstance(decoded, dict) else None
    return None
