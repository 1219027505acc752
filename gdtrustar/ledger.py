"""What was delivered where, in SQLite, so reruns and resumes skip unchanged findings.

Decisions are pure functions over rows (``decide``); ``Ledger`` only owns the database. A row is
written only after Station confirmed the write, and rows are committed per batch: a crash (even
SIGKILL) loses at most the uncommitted batch, whose findings the next run simply upserts again,
which cannot duplicate because the write is keyed by external id.

Rows are keyed by (Station API endpoint, enclave, finding id): the same finding delivered to
another Station or enclave is another report.

Newest wins: a copy of a finding whose ``updatedAt`` is older than the delivered one (an old
export, an old failures file, S3 objects read out of order) is ``unchanged`` and costs no call,
so it can never overwrite the newer report. Times are compared as instants, not as strings.

Besides findings the ledger holds two kinds of checkpoints (``checkpoint.py`` decides when they
are written): backfill bookmarks, each stored with the lower bound of the window it covers, and
S3 export objects that were delivered completely, by (bucket, key, ETag).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple, Optional

from gdtrustar.actions import Decision
from gdtrustar.errors import ConfigError
from gdtrustar.findings import canonical_time

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    station TEXT NOT NULL,
    enclave_id TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    digest TEXT NOT NULL,
    report_id TEXT,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (station, enclave_id, finding_id)
);
CREATE TABLE IF NOT EXISTS bookmarks (
    partition_key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    scope TEXT NOT NULL,
    bucket TEXT NOT NULL,
    object_key TEXT NOT NULL,
    etag TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (scope, bucket, object_key, etag)
);
"""


class Delivered(NamedTuple):
    """One ledger row: what Station holds for a finding in an enclave."""

    updated_at: str
    digest: str
    report_id: Optional[str]


class Bookmark(NamedTuple):
    """Where a backfill may resume.

    Every finding updated before ``at`` and at or after ``since_ms`` (None: from the beginning)
    was delivered.
    """

    at: str
    since_ms: Optional[int]

    def covers(self, since_ms: Optional[int]) -> bool:
        """Whether this bookmark may narrow a run whose window starts at ``since_ms``.

        It may only if the run that stored it covered that start: a bookmark stored by
        ``--since 2d`` says nothing about findings older than two days.
        """
        return self.since_ms is None or (since_ms is not None and self.since_ms <= since_ms)

    def dumps(self) -> str:
        return json.dumps({"at": self.at, "since_ms": self.since_ms})

    @classmethod
    def loads(cls, text: str) -> Optional[Bookmark]:
        """The stored bookmark, or None for one this version cannot trust (e.g. one without its window)."""
        try:
            data = json.loads(text)
            at, since_ms = data["at"], data["since_ms"]
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(at, str) or not (since_ms is None or type(since_ms) is int):
            return None
        return cls(at, since_ms)


def decide(row: Optional[Delivered], updated_at: str, digest: str, force: bool = False) -> Decision:
    """Classify a finding against its ledger row: ``new``, ``changed`` or ``unchanged``.

    A finding is unchanged if GuardDuty did not update it and the report we would send is
    byte-identical to the delivered one (a new gdtrustar version may render reports differently),
    and also if it is an older copy than the delivered one: the newer report stays.
    """
    if row is None:
        return Decision.NEW
    if force:
        return Decision.CHANGED
    order = compare_times(updated_at, row.updated_at)
    if order < 0:
        return Decision.UNCHANGED
    if order > 0 or row.digest != digest:
        return Decision.CHANGED
    return Decision.UNCHANGED


def compare_times(a: str, b: str) -> int:
    """-1, 0 or 1 as instant ``a`` is before, equal to or after ``b``; 1 when either is not a time.

    Unreadable times compare as "after" so that a finding we cannot order is written, never dropped.
    """
    try:
        first, second = canonical_time(a), canonical_time(b)
    except (OverflowError, ValueError):
        first = second = None
    if first is None or second is None:
        return 0 if a == b else 1
    return (first > second) - (first < second)  # the canonical form is fixed-width UTC: it sorts as time


def default_path() -> Path:
    """``$XDG_STATE_HOME/gdtrustar/ledger.sqlite3`` (``~/.local/state`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "gdtrustar" / "ledger.sqlite3"


def _connect_private(path: Path) -> sqlite3.Connection:
    """Open the database with 0600 files (the -wal and -shm too) in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = os.umask(0o077)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    finally:
        os.umask(old)
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # an older file may have been 0644
        if name.exists():
            os.chmod(name, 0o600)
    return conn


def open_ledger(path: Path, station: str) -> Ledger:
    """The ledger, or one configuration error line saying why it cannot be opened."""
    try:
        return Ledger(path, station)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open the ledger {path}: {getattr(exc, 'strerror', None) or exc} "
                          "(set XDG_STATE_HOME or pass --state FILE)") from exc


class Ledger:
    """SQLite owner. Used from one thread (the delivery engine's), committed per batch.

    Implementation note: no transaction is held open between commits. Reads run in autocommit
    mode and see what other runs committed; writes are buffered and land in one short
    ``BEGIN IMMEDIATE`` transaction per batch. Two runs sharing a ledger (a cron backfill and a
    hand-run ``send``) therefore interleave instead of failing: a transaction kept open across
    reads would hold a stale snapshot that SQLite refuses to upgrade to a write ("database is
    locked", without waiting) once the other run commits.
    """

    def __init__(self, path: Path, station: str) -> None:
        self.path = path
        self.station = station
        self.conn = _connect_private(path)
        self._deliveries: dict[tuple[str, str], tuple] = {}
        self._writes: list[tuple[str, tuple]] = []

    def lookup(self, enclave_id: str, finding_id: str) -> Optional[Delivered]:
        pending = self._deliveries.get((enclave_id, finding_id))
        if pending is not None:
            return Delivered(*pending[3:6])
        row = self.conn.execute(
            "SELECT updated_at, digest, report_id FROM deliveries WHERE station=? AND enclave_id=? AND finding_id=?",
            (self.station, enclave_id, finding_id),
        ).fetchone()
        return Delivered(*row) if row else None

    def record(self, enclave_id: str, finding_id: str, updated_at: str, digest: str, report_id: Optional[str]) -> None:
        row = (self.station, enclave_id, finding_id, updated_at, digest, report_id, time.time())
        self._deliveries[(enclave_id, finding_id)] = row

    def get_bookmark(self, key: str) -> Optional[Bookmark]:
        row = self.conn.execute("SELECT value FROM bookmarks WHERE partition_key=?", (key,)).fetchone()
        return Bookmark.loads(row[0]) if row else None

    def set_bookmark(self, key: str, bookmark: Bookmark) -> None:
        self._writes.append(("INSERT OR REPLACE INTO bookmarks VALUES (?, ?, ?)",
                             (key, bookmark.dumps(), time.time())))

    def object_done(self, scope: str, bucket: str, key: str, etag: str) -> bool:
        """Whether this exact object version was delivered completely to this scope before."""
        row = self.conn.execute(
            "SELECT 1 FROM objects WHERE scope=? AND bucket=? AND object_key=? AND etag=?",
            (f"{self.station}|{scope}", bucket, key, etag),
        ).fetchone()
        return row is not None

    def mark_object(self, scope: str, bucket: str, key: str, etag: str) -> None:
        """Remember an object whose every finding was delivered (committed with the next batch)."""
        self._writes.append(("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                             (f"{self.station}|{scope}", bucket, key, etag, time.time())))

    @property
    def pending(self) -> int:
        """Rows written since the last commit."""
        return len(self._deliveries) + len(self._writes)

    def commit(self) -> None:
        """Make everything recorded so far durable in one short write transaction."""
        if not self.pending:
            return
        self.conn.execute("BEGIN IMMEDIATE")  # waits (busy timeout) for another run's commit, never fails on it
        try:
            self.conn.executemany("INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  list(self._deliveries.values()))
            for statement, params in self._writes:
                self.conn.execute(statement, params)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self._deliveries.clear()
        self._writes.clear()

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.conn.close()
