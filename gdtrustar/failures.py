"""The failures file: every finding that was not delivered, in a shape ``gdtrustar send`` reads back.

Each line is ``{"failure": {...why and where...}, "finding": {...canonical finding...}}`` (or
``"document"`` for input that was not a valid finding). ``findings.explode`` unwraps these records,
so replaying the file re-sends exactly the findings it lists.

The file is written to a temporary name and renamed at the end, so it may safely replace one of
the run's own inputs (``gdtrustar send --failures f.jsonl f.jsonl``). It is created 0600: findings
describe the user's infrastructure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Optional

from gdtrustar.delivery import Outcome


def default_path() -> Path:
    """A new timestamped file in the working directory, so one run never overwrites another's."""
    return Path(f"gdtrustar-failures-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl")


class FailuresFile:
    """Collects failed and invalid outcomes; ``explicit`` paths are always (re)written, even empty."""

    def __init__(self, path: Optional[Path], explicit: bool) -> None:
        self.path = path or default_path()
        self.explicit = explicit
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh: Optional[IO[str]] = None

    def add(self, outcome: Outcome) -> None:
        """Append one undelivered finding (or invalid document)."""
        if outcome.action not in ("failed", "invalid"):
            return
        record: dict = {"failure": outcome.record()}
        if outcome.finding is not None:
            record["finding"] = outcome.finding
        elif outcome.document is not None:
            record["document"] = outcome.document
        self._open().write(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str) + "\n")
        self.count += 1

    def _open(self) -> IO[str]:
        if self._fh is None:
            if self.path.parent != Path(""):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._fh = os.fdopen(fd, "w", encoding="utf-8")
        return self._fh

    def close(self) -> Optional[Path]:
        """Publish the file; returns its path when it holds anything or was asked for."""
        if self._fh is None and not self.explicit:
            return None
        self._open().close()
        os.replace(self._tmp, self.path)
        return self.path
