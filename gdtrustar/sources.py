"""Readers that stream JSON documents out of files, directories, stdin and gzip.

Each yields ``Document``s: a parsed value with its origin (file, and line for JSON Lines), or an
error saying exactly what is wrong with that part of the input. Nothing here raises for bad input,
and nothing holds more than one document (one JSON Lines line, or one whole JSON file) at a time.

Format detection is per file, not per name: if the first non-blank line is a complete JSON value
the file is JSON Lines, otherwise it is one JSON document (pretty-printed event, array, or
``{"Findings": [...]}``). gzip is recognised by its magic bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Optional

SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Document:
    """One parsed JSON value, or the reason there is none, and where it came from."""

    origin: str
    value: Any = None
    error: Optional[str] = None


def iter_documents(sources: Iterable[str], stdin: Optional[IO[bytes]] = None) -> Iterator[Document]:
    """Documents from every source in order: files, directories (recursive), ``-`` for stdin."""
    for source in sources:
        if source == "-":
            yield from _read_stream(stdin or sys.stdin.buffer, "<stdin>")
        elif os.path.isdir(source):
            for path in _walk(Path(source)):
                yield from read_file(path)
        elif os.path.exists(source):
            yield from read_file(Path(source))
        else:
            yield Document(source, error="no such file or directory")


def _walk(root: Path) -> Iterator[Path]:
    """Matching files below ``root`` in a stable (sorted) order, without listing them all first."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(SUFFIXES):
                yield Path(dirpath) / name


def read_file(path: Path) -> Iterator[Document]:
    """Documents of one file; an unreadable file is one error document."""
    try:
        with open(path, "rb") as raw:
            yield from _read_stream(raw, str(path))
    except OSError as exc:
        yield Document(str(path), error=f"cannot read: {exc.strerror or exc}")


def read_stream(stream: IO[bytes], name: str) -> Iterator[Document]:
    """Documents of one byte stream that is not a local file (an S3 object body), named ``name``."""
    return _read_stream(stream, name)


def _read_stream(raw: IO[bytes], name: str) -> Iterator[Document]:
    buffered = io.BufferedReader(raw) if not hasattr(raw, "peek") else raw
    gzipped = buffered.peek(2)[:2] == GZIP_MAGIC
    if gzipped:
        buffered = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    text = io.TextIOWrapper(buffered, encoding="utf-8", errors="strict", newline=None)
    # Zero JSON Lines records is a valid (e.g. replayed, all-delivered) failures file; an empty
    # .json, or a .gz that is not even gzip, is not.
    empty_ok = name.endswith(".jsonl") or (gzipped and name.endswith(".jsonl.gz"))
    try:
        yield from _parse_text(text, name, empty_ok)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        yield Document(name, error=f"truncated or corrupt gzip ({exc})")
    except UnicodeDecodeError:
        yield Document(name, error="not UTF-8 JSON text (binary file?)")
    except OSError as exc:
        yield Document(name, error=f"read error: {exc}")


def _parse_text(text: IO[str], name: str, empty_ok: bool) -> Iterator[Document]:
    """Decide JSON Lines vs one document from the first non-blank line, then parse."""
    lineno = 0
    for line in text:
        lineno += 1
        if not line.strip():
            continue
        first = _line_document(line, name, lineno)
        if first.error and not name.endswith((".jsonl", ".jsonl.gz")):
            yield from _whole_document(line + text.read(), name, lineno)
        else:
            yield first
            yield from _json_lines(text, name, lineno)
        return
    if not empty_ok:
        yield Document(name, error="empty file: no JSON found")


def _json_lines(lines: Iterable[str], name: str, lineno: int) -> Iterator[Document]:
    for line in lines:
        lineno += 1
        if line.strip():
            yield _line_document(line, name, lineno)


def _line_document(line: str, name: str, lineno: int) -> Document:
    origin = f"{name}:{lineno}"
    try:
        return Document(origin, json.loads(line))
    except json.JSONDecodeError as exc:
        return Document(origin, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        return Document(origin, error=f"invalid JSON: {_short(exc)}")


def _whole_document(content: str, name: str, first_line: int) -> Iterator[Document]:
    """One JSON document; if it does not parse but later lines are JSON objects, it was JSON Lines."""
    try:
        yield Document(name, json.loads(content))
        return
    except json.JSONDecodeError as exc:
        error = Document(f"{name}:{exc.lineno + first_line - 1}", error=f"invalid JSON: {exc.msg} (column {exc.colno})")
    except (ValueError, RecursionError) as exc:
        error = Document(name, error=f"invalid JSON: {_short(exc)}")
    lines = content.splitlines()
    later = [_line_document(line, name, first_line + i) for i, line in enumerate(lines[1:], 1) if line.strip()]
    if any(isinstance(doc.value, dict) for doc in later):
        yield _line_document(lines[0], name, first_line)
        yield from later
    else:
        yield error


def _short(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0][:120] or type(exc).__name__
