r"""Text that leaves gdtrustar: safe for a terminal, exact as JSON, always encodable as UTF-8.

Input is hostile: a finding's title, a non-finding's keys, a file name or a Station error message
can hold terminal control sequences (cursor moves, OSC 52 clipboard writes), bidi overrides that
reorder what a reader sees, and lone surrogates (``"\ud800"`` in JSON, or the ``surrogateescape``
form of a non-UTF-8 file name) that no UTF-8 stream can write. Three rules, one place each:

* ``printable`` is applied to everything printed for humans (problem lines, tables, summaries,
  error lines, log messages): control and bidi characters become visible ``\xNN``/``\uNNNN``.
* ``json_text`` is the one JSON encoder for stdout and the failures file: exact JSON (any string
  may be written with ``\u`` escapes), with C1 controls, DEL, bidi overrides, line separators and
  lone surrogates escaped, so the line is valid UTF-8 and harmless when viewed on a terminal.
* ``unicode_problem`` lets ``findings.normalize`` reject a finding holding text that is not valid
  Unicode, so it never reaches the mapper, the ledger (SQLite) or Station.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

# C0 controls, DEL, C1 controls, bidi embeddings/overrides/isolates (the "Trojan Source" set), and
# surrogates (a Python str holds one only when it is not valid Unicode text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# In JSON text the C0 controls are already escaped by json.dumps; U+2028/2029 split lines for
# line-oriented readers (str.splitlines), so they are escaped too.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """``text`` with every control, bidi-override and surrogate character shown as an escape."""
    return _UNSAFE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """``printable`` line by line, for multi-line output (plans, log records, tracebacks)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def printable_path(name: str) -> str:
    r"""A file name for origins: bytes that are not UTF-8 (``surrogateescape``) shown as ``\xNN``."""
    if not _SURROGATE.search(name):
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def json_text(value: Any, **dumps: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``, made safe for UTF-8 streams and terminals."""
    text = json.dumps(value, ensure_ascii=False, **dumps)
    if text.isascii() and "\x7f" not in text:  # the common case, checked at C speed
        return text
    return _JSON_UNSAFE.sub(_json_escape, text)


def unicode_problem(value: Any) -> Optional[str]:
    """Why ``value`` (a JSON-like tree) cannot be written as UTF-8, naming where; None if it can."""
    try:  # one C-speed pass for the common case: repr shows every surrogate as \udxxx
        if "\\ud" not in repr(value):
            return None
    except RecursionError:
        pass
    return _find_surrogate(value, "")  # rare: a surrogate, or only a backslash followed by "ud"


def _find_surrogate(value: Any, path: str) -> Optional[str]:
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return f"{path or 'a value'} holds text that is not valid Unicode ({_escape(found)})" if found else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, element in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and _SURROGATE.search(key):
            return f"a key in {path or 'the finding'} is not valid Unicode ({printable(key)})"
        problem = _find_surrogate(element, where)
        if problem:
            return problem
    return None
