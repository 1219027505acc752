"""Readers that stream JSON documents out of files, directories, stdin and gzip.

Each yields ``Document``s: a parsed value with its origin (file, and line for JSON Lines), or an
error saying exactly what is wrong with that part of the input. Nothing here raises for bad input,
and nothing holds more than one document (one JSON Lines line, or one whole JSON file) at a time.

Format detection is per file, not per name: if the first non-blank line is a complete JSON value
the file is JSON Lines, otherwise it is one JSON document (pretty-printed event, array, or
``{"Findings": [...]}``). gzip is recognised by its magic bytes.

Input is read as bytes, one line at a time, and decoded per line: a bad byte costs the line (or
the one document) that holds it, never the rest of the file. No line or document may exceed the
document limit (``GDTRUSTAR_MAX_DOCUMENT_BYTES``, 16 MiB): a longer one is skipped in bounded
chunks without being built in memory, so a gzip bomb of one 1 GiB line is one invalid record.
Text that was read but could not be parsed is kept as ``Unparsed`` (bad bytes escaped), so the
failures file shows what was there.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Optional, Protocol, runtime_checkable

from gdtrustar.errors import ConfigError
from gdtrustar.text import printable_path

SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
GZIP_MAGIC = b"\x1f\x8b"
LIMIT_ENV = "GDTRUSTAR_MAX_DOCUMENT_BYTES"
DEFAULT_LIMIT = 16 * 1024 * 1024
_SKIP_CHUNK = 1 << 16  # how much of an oversized line is held at a time while skipping it


class Unparsed(str):
    r"""Input text that is not JSON (bad bytes as ``\xNN``): what a failures file shows in ``raw``."""


@dataclass(frozen=True)
class Document:
    """One parsed JSON value, or the reason there is none, and where it came from."""

    origin: str
    value: Any = None
    error: Optional[str] = None
    raw: Optional[Unparsed] = None


def document_limit(env: Optional[Mapping[str, str]] = None) -> int:
    """The largest line or document read, in bytes, from ``GDTRUSTAR_MAX_DOCUMENT_BYTES``."""
    value = (os.environ if env is None else env).get(LIMIT_ENV, "").strip()
    if not value:
        return DEFAULT_LIMIT
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{LIMIT_ENV} must be a positive whole number of bytes, got {value!r}")
    return int(value)


def iter_documents(sources: Iterable[str], stdin: Optional[IO[bytes]] = None,
                   limit: Optional[int] = None) -> Iterator[Document]:
    """Documents from every source in order: files, directories (recursive), ``-`` for stdin.

    The limit is resolved now, not when the first document is read, so a bad setting stops the
    command before anything is attempted.
    """
    return _documents(sources, stdin, document_limit() if limit is None else limit)


def _documents(sources: Iterable[str], stdin: Optional[IO[bytes]], limit: int) -> Iterator[Document]:
    for source in sources:
        if source == "-":
            yield from _read_stream(stdin or sys.stdin.buffer, "<stdin>", limit)
        elif os.path.isdir(source):
            for path in _walk(Path(source)):
                yield from read_file(path, limit)
        elif os.path.exists(source):
            yield from read_file(Path(source), limit)
        else:
            yield Document(printable_path(source), error="no such file or directory")


def _walk(root: Path) -> Iterator[Path]:
    """Matching files below ``root`` in a stable (sorted) order, without listing them all first."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(SUFFIXES):
                yield Path(dirpath) / name


def read_file(path: Path, limit: int = DEFAULT_LIMIT) -> Iterator[Document]:
    """Documents of one file; an unreadable file is one error document."""
    name = printable_path(str(path))
    try:
        with open(path, "rb") as raw:
            yield from _read_stream(raw, name, limit)
    except OSError as exc:
        yield Document(name, error=f"cannot read: {exc.strerror or exc}")


def read_stream(stream: IO[bytes], name: str, limit: Optional[int] = None) -> Iterator[Document]:
    """Documents of one byte stream that is not a local file (an S3 object body), named ``name``."""
    return _read_stream(stream, printable_path(name), document_limit() if limit is None else limit)


@runtime_checkable
class _Peekable(Protocol):
    """What the reader needs of a byte stream: a buffered file, stdin, an S3 body, a GzipFile."""

    def peek(self, n: int, /) -> bytes: ...
    def read(self, n: int, /) -> bytes: ...
    def seek(self, n: int, /) -> object: ...
    def readline(self, size: int, /) -> bytes: ...


def _peekable(raw: IO[bytes]) -> _Peekable:
    """``raw`` itself when it can peek, else ``raw`` behind a buffer (e.g. a ``BytesIO`` given as stdin)."""
    if isinstance(raw, _Peekable):
        return raw
    if isinstance(raw, (io.RawIOBase, io.BufferedIOBase)):
        return io.BufferedReader(raw)
    raise TypeError(f"cannot read a {type(raw).__name__}: it can neither peek nor be buffered")


def _read_stream(raw: IO[bytes], name: str, limit: int = DEFAULT_LIMIT) -> Iterator[Document]:
    buffered = _peekable(raw)
    head = buffered.peek(2)[:2]
    gzipped = head == GZIP_MAGIC
    if head == GZIP_MAGIC[:1] and len(buffered.peek(2)) == 1:  # one byte of a gzip header, then the end
        yield Document(name, error="truncated or corrupt gzip (the file ends inside its header)")
        return
    if gzipped:
        buffered = gzip.GzipFile(fileobj=buffered, mode="rb")
    # Zero JSON Lines records is a valid (e.g. replayed, all-delivered) failures file; an empty
    # .json, or a .gz that is not even gzip, is not.
    empty_ok = name.endswith(".jsonl") or (gzipped and name.endswith(".jsonl.gz"))
    try:
        yield from _parse(_Lines(buffered, limit), name, empty_ok)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        yield Document(name, error=f"truncated or corrupt gzip ({exc})")
    except OSError as exc:
        yield Document(name, error=f"read error: {exc}")


class _Lines:
    """Numbered byte lines of a stream, each at most ``limit`` bytes; a longer one is ``None``."""

    def __init__(self, stream: _Peekable, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.lineno = 0

    def __iter__(self) -> Iterator[tuple[int, Optional[bytes]]]:
        while True:
            line = self.stream.readline(self.limit + 1)
            if not line:
                return
            self.lineno += 1
            if len(line) > self.limit and not line.endswith(b"\n"):
                while not self._skipped_to_newline():
                    pass
                yield self.lineno, None
            else:
                yield self.lineno, line

    def _skipped_to_newline(self) -> bool:
        chunk = self.stream.readline(_SKIP_CHUNK)
        return not chunk or chunk.endswith(b"\n")

    def too_long(self, name: str, lineno: int, what: str = "line") -> Document:
        mib = f"{self.limit / 1048576:g} MiB" if self.limit >= 1048576 else f"{self.limit} bytes"
        return Document(f"{name}:{lineno}", error=f"{what} larger than the {mib} limit ({LIMIT_ENV}); not read")


def _parse(lines: _Lines, name: str, empty_ok: bool) -> Iterator[Document]:
    """Decide JSON Lines vs one document from the first non-blank line, then parse."""
    numbered = iter(lines)
    for lineno, data in numbered:
        if data is not None and not data.strip():
            continue
        if data is None:  # nothing this long can be one valid document either: read on as lines
            yield lines.too_long(name, lineno)
        else:
            first = _line_document(data, name, lineno)
            if first.error and not name.endswith(JSONL_SUFFIXES):
                yield from _whole_document(data, numbered, lines, name, lineno)
                return
            yield first
        yield from _json_lines(numbered, lines, name)
        return
    if not empty_ok:
        yield Document(name, error="empty file: no JSON found")


def _json_lines(numbered: Iterator[tuple[int, Optional[bytes]]], lines: _Lines, name: str) -> Iterator[Document]:
    for lineno, data in numbered:
        if data is None:
            yield lines.too_long(name, lineno)
        elif data.strip():
            yield _line_document(data, name, lineno)


def _line_document(data: bytes, name: str, lineno: int) -> Document:
    origin = f"{name}:{lineno}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Document(origin, error=_not_utf8(data, exc), raw=_unparsed(data))
    try:
        return Document(origin, json.loads(text))
    except json.JSONDecodeError as exc:
        return Document(origin, error=f"invalid JSON: {exc.msg} (column {exc.colno})", raw=_unparsed(data))
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        return Document(origin, error=f"invalid JSON: {_short(exc)}", raw=_unparsed(data))


def _whole_document(first: bytes, numbered: Iterator[tuple[int, Optional[bytes]]], lines: _Lines, name: str,
                    first_line: int) -> Iterator[Document]:
    """One JSON document; if it does not parse but later lines are JSON objects, it was JSON Lines.

    At most ``limit`` bytes are gathered: a longer document is invalid without being read further,
    unless the lines gathered so far show that the file is JSON Lines after all.
    """
    parts, size, overflow = [first], len(first), None
    for lineno, data in numbered:
        if data is None or size + len(data) > lines.limit:
            overflow = (lineno, data)  # the line that did not fit
            break
        parts.append(data)
        size += len(data)
    later = [_line_document(data, name, first_line + i) for i, data in enumerate(parts[1:], 1) if data.strip()]
    json_lines = any(isinstance(doc.value, dict) for doc in later)
    if overflow is None:
        whole = _parse_whole(b"".join(parts), name, first_line)
        if whole.error is None or not json_lines:
            yield whole
            return
    elif not json_lines:
        yield lines.too_long(name, first_line, "document")
        return
    yield _line_document(first, name, first_line)
    yield from later
    if overflow is not None:
        yield from _json_lines(itertools.chain([overflow], numbered), lines, name)


def _parse_whole(content: bytes, name: str, first_line: int) -> Document:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + content.count(b"\n", 0, exc.start)
        column = exc.start - (content.rfind(b"\n", 0, exc.start) + 1)
        return Document(f"{name}:{line}", error=_not_utf8(content, exc, column), raw=_unparsed(content))
    try:
        return Document(name, json.loads(text))
    except json.JSONDecodeError as exc:
        return Document(f"{name}:{exc.lineno + first_line - 1}", error=f"invalid JSON: {exc.msg} (column {exc.colno})",
                        raw=Unparsed(text))
    except (ValueError, RecursionError) as exc:
        return Document(name, error=f"invalid JSON: {_short(exc)}", raw=Unparsed(text))


def _not_utf8(data: bytes, exc: UnicodeDecodeError, column: Optional[int] = None) -> str:
    where = exc.start if column is None else column
    return f"not UTF-8 text: invalid byte 0x{data[exc.start]:02x} at column {where + 1}"


def _unparsed(data: bytes) -> Unparsed:
    return Unparsed(data.decode("utf-8", "backslashreplace").rstrip("\r\n"))


def _short(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0][:120] or type(exc).__name__
