"""The failures file: every finding that was not delivered, in a shape ``gdtrustar send`` reads back.

Each line is ``{"failure": {...why and where...}, "finding": {...canonical finding...}}`` (or
``"document"`` for input that was not a valid finding, or ``"raw"`` for text that was not JSON).
``findings.explode`` unwraps these records, so replaying the file re-sends exactly the findings it
lists, and input that never was a finding stays invalid with its original reason.

The file is written to a temporary name and renamed at the end, so it may safely replace one of
the run's own inputs (``gdtrustar send --failures f.jsonl f.jsonl``). It is created 0600: findings
describe the user's infrastructure.

Where it goes is settled before anything is attempted: ``--failures FILE``, else the working
directory, else (cron from ``/``, a read-only container root) the state directory. If none of them
is writable the run stops at start (exit 2): a run must never find out half-way that it cannot
list what it did not deliver.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO, Optional

from gdtrustar.actions import UNDELIVERED
from gdtrustar.errors import ConfigError
from gdtrustar.outcomes import Outcome
from gdtrustar.sources import Unparsed
from gdtrustar.text import json_text


def default_name() -> str:
    """A new timestamped name, so one run never overwrites another's."""
    return f"gdtrustar-failures-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"


def writable(directory: Path) -> bool:
    """True if files can be created in ``directory``, or in the nearest existing ancestor that would hold it."""
    directory = Path(os.path.abspath(directory))
    while not directory.exists():
        if directory.parent == directory:
            return False
        directory = directory.parent
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def choose_path(explicit: Optional[Path], state_dir: Path) -> tuple[Path, Optional[str]]:
    """Where the failures file goes, and a note for the summary when it is not where a user looks first."""
    if explicit is not None:
        if not writable(explicit.parent):
            raise ConfigError(f"cannot write the failures file {explicit}: its directory is not writable")
        return explicit, None
    if writable(Path.cwd()):
        return Path(default_name()), None
    if writable(state_dir):
        return state_dir / default_name(), "the working directory is not writable"
    raise ConfigError(f"nowhere to list undelivered findings: neither the working directory ({Path.cwd()}) nor "
                      f"the state directory ({state_dir}) is writable; pass --failures FILE")


class FailuresFile:
    """Collects failed and invalid outcomes; ``explicit`` paths are always (re)written, even empty."""

    def __init__(self, path: Path, explicit: bool, note: Optional[str] = None) -> None:
        self.path = path
        self.explicit = explicit
        self.note = note
        self.count = 0
        self.published: Optional[Path] = None
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh: Optional[IO[str]] = None

    def add(self, outcome: Outcome) -> None:
        """Append one undelivered finding (or invalid document)."""
        if outcome.action not in UNDELIVERED:
            return
        record: dict = {"failure": outcome.record()}
        if outcome.finding is not None:
            record["finding"] = outcome.finding
        elif isinstance(outcome.document, Unparsed):
            record["raw"] = str(outcome.document)
        elif outcome.document is not None:
            record["document"] = outcome.document
        self._open().write(json_text(record, sort_keys=True, default=str) + "\n")
        self.count += 1

    def _open(self) -> IO[str]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._fh = os.fdopen(fd, "w", encoding="utf-8")
        return self._fh

    def close(self) -> Optional[Path]:
        """Publish the file; returns (and keeps in ``published``) its path when it holds anything or was asked for."""
        if self._fh is None and not self.explicit:
            return None
        self._open().close()
        os.replace(self._tmp, self.path)
        self.published = self.path
        return self.path
