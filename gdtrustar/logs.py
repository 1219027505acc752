"""Logging for the CLI and the Lambda: one stderr handler, secrets redacted at every verbosity.

The trustar SDK's own logging quirks (a JSON handler on stdout, a level variable parsed at import)
are handled in ``sdk.py``; ``setup_logging`` asks it to route the SDK's records to our handler.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Iterator, Optional, TextIO

from gdtrustar.text import printable_lines

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
REDACTED = "***"


def register_secret(value: Optional[str]) -> None:
    """Remember a value that must never be written to any log or output."""
    if value and len(value) >= 4:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text``."""
    for secret in tuple(_SECRETS):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


@contextlib.contextmanager
def scoped_secrets() -> Iterator[None]:
    """Forget the secrets registered inside the block when it ends (one CLI run in a longer process)."""
    with _LOCK:
        before = set(_SECRETS)
    try:
        yield
    finally:
        with _LOCK:
            _SECRETS.intersection_update(before)


class RedactingFilter(logging.Filter):
    """Formats the record's message early, strips registered secrets and escapes control characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = str(record.msg)
        record.msg, record.args = printable_lines(redact(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = printable_lines(redact(record.exc_text))
        return True


def setup_logging(verbosity: int, stream: Optional[TextIO] = None) -> None:
    """Configure the root logger: -q errors only, default warnings, -v info, -vv debug (incl. SDKs)."""
    from gdtrustar import sdk  # deferred: importing the SDK (quietly) creates the loggers to route

    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.CRITICAL
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The SDK logs a "client_metatag will become mandatory"-style warning per client; keep it below -v.
    sdk.route_logs(logging.DEBUG if verbosity >= 2 else max(level, logging.ERROR if verbosity < 1 else level))
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 2 else max(level, logging.WARNING))
