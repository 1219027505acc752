"""What one API key did in the last minute, shared by every run on this machine whatever its ledger.

Station's budget is per user (API key), not per ledger: two runs with different ``--state`` files on
one key draw from the same budget. So the pacer's memory lives in a small file per (API endpoint,
key) in the state directory, named by a hash of the two (never the key itself), mode 0600:
``{"calls": [wall-clock times of the last 61 s], "cut": [rate, wall time] | null}``.

A run reads it before its first call (``seed``) and rewrites it at the end (``save``) with the
calls its pacer knows (its own and the seeded ones), through a temporary file and a rename. Runs on
one key at the same time are not coordinated (each paces as if it were alone). The file is
advisory: an unreadable or unwritable one costs a warning, never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

from gdtrustar.pacing import SPAN, Pacer

log = logging.getLogger(__name__)
KEPT = 5000  # calls remembered at most (a real key makes 60 a minute; test rates make far more)


def state_path(state_dir: Path, endpoint: str, api_key: str) -> Path:
    """The key's file: named by a hash of endpoint and key."""
    digest = hashlib.sha256(f"{endpoint}\0{api_key}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return state_dir / f"calls-{digest}.json"


def _read(path: Path, now: float) -> tuple[list[float], Optional[tuple[float, float]]]:
    """(call times within SPAN of ``now``, cut) from the file; nothing when it is missing or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        calls = [float(t) for t in data.get("calls", []) if now - SPAN < float(t) < now + SPAN]
        cut = data.get("cut")
        return calls, ((float(cut[0]), float(cut[1])) if cut else None)
    except FileNotFoundError:
        return [], None
    except (OSError, ValueError, TypeError, AttributeError, IndexError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return [], None


def seed(pacer: Pacer, path: Path) -> None:
    """Start ``pacer`` where earlier runs on this key left the budget."""
    now = time.time()
    calls, cut = _read(path, now)
    pacer.seed([now - t for t in calls], (cut[0], now - cut[1]) if cut else None)


def save(pacer: Pacer, path: Path) -> None:
    """Replace the key's file with this run's calls of the last window (the seeded ones included) and its cut."""
    now = time.time()
    calls = sorted(now - age for age in pacer.ages())[-KEPT:]
    cut = pacer.last_cut()
    data = {"calls": [round(t, 3) for t in calls], "cut": [cut[0], now - cut[1]] if cut else None}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot remember this run's Station calls in %s: %s", path, exc)
