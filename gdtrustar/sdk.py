"""The one door to the trustar SDK, and the SDK's logging quirks.

The SDK parses ``TRUSTAR_LOGGING_LEVEL`` with ``int()`` at import time (docs/decisions.md#sdk-logging),
so a user's ``TRUSTAR_LOGGING_LEVEL=WARNING`` would crash any import of it; ``quiet_sdk`` runs
before the import below to make the value an int (WARNING when unset, not the SDK's INFO). The SDK
also binds a JSON handler to ``sys.stdout`` as it was at import, on every ``trustar`` logger, and
logs a "will become mandatory"-style warning per client; ``route_logs`` (called by
``logs.setup_logging`` on every run, since a run in a longer process may have new streams) detaches
those handlers so the records reach ours (stderr, redacted) and stdout stays clean for ``--json``.

This module imports nothing of ours: ``logs`` depends on it, not the other way round.
"""

from __future__ import annotations

import logging
import os


def quiet_sdk() -> None:
    """Make the SDK importable and silent: its level variable must be an int (docs/decisions.md#sdk-logging)."""
    level = os.environ.get("TRUSTAR_LOGGING_LEVEL")
    if level is not None and not level.strip().lstrip("-").isdigit():
        number = logging.getLevelName(level.strip().upper())  # an int for a known name like "DEBUG"
        os.environ["TRUSTAR_LOGGING_LEVEL"] = str(number if isinstance(number, int) else logging.WARNING)
    os.environ.setdefault("TRUSTAR_LOGGING_LEVEL", str(logging.WARNING))


quiet_sdk()

from trustar import TruStar  # noqa: E402  (untyped: see [tool.mypy] in pyproject.toml)
from trustar.api_client import ApiClient  # noqa: E402

__all__ = ["ApiClient", "TruStar", "quiet_sdk", "route_logs"]


def route_logs(level: int) -> None:
    """Send the SDK's records to the root logger's handlers at ``level``: remove its stdout handler everywhere."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith("trustar"):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
    logging.getLogger("trustar").setLevel(level)
