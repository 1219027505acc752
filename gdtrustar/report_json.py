"""The report's JSON appendix: ``json.dumps(indent=2, sort_keys=True, ensure_ascii=False)``, written fast.

The stdlib's C encoder ignores ``indent`` and its pure-Python fallback was the largest cost of a
report. This writer recurses only into containers and encodes strings in C, and collects every
string it writes so the mapper can bound the indicator count without a second walk.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring as _encode_string  # C-accelerated
from typing import Any


def to_json(value: Any) -> str:
    """Return exactly ``json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)``, faster.

    The stdlib's C encoder ignores ``indent`` and its pure-Python fallback was the largest cost of
    a report; this writer recurses only into containers and encodes strings in C.
    """
    return appendix_json(value, [])


def appendix_json(value: Any, strings: list[str]) -> str:
    """``to_json`` that also collects every string (values and keys) it writes into ``strings``."""
    try:
        return _json_value(value, "", strings)
    except (TypeError, ValueError, RecursionError):  # unsortable keys, odd floats: let the stdlib decide
        strings.append(json.dumps(value, ensure_ascii=False, default=str))
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _json_value(value: Any, indent: str, strings: list[str]) -> str:
    cls = value.__class__
    if cls is dict or cls is list:
        if not value:
            return "{}" if cls is dict else "[]"
        inner = indent + "  "
        keep = strings.append
        if cls is dict:
            strings.extend(value)
            parts = [_encode_string(key) + ": " + (
                     _encode_string(element) if element.__class__ is str and not keep(element)
                     else _json_value(element, inner, strings)) for key, element in sorted(value.items())]
            return "{\n" + inner + (",\n" + inner).join(parts) + "\n" + indent + "}"
        parts = [_encode_string(element) if element.__class__ is str and not keep(element)
                 else _json_value(element, inner, strings) for element in value]
        return "[\n" + inner + (",\n" + inner).join(parts) + "\n" + indent + "]"
    if isinstance(value, str):
        strings.append(value)
        return _encode_string(value)
    if value is None or cls is bool:
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    raise TypeError(f"not plain JSON: {type(value).__name__}")
