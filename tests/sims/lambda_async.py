"""Lambda's asynchronous invocation, emulated: the direct path of stacks made before the queue.

EventBridge hands each event to Lambda's internal queue; Lambda runs up to ``copies`` execution
environments at once, one event each. Per the Lambda developer guide, a function error (a raise,
or the timeout) is retried twice, about one minute and then about two minutes later, and then the
event goes to the on-failure destination (here: the ``dead`` list). A copy is a long-lived
process (its warm state survives between events) that runs ``handler(event, context)``; at the
function timeout the emulator kills it, as Lambda ends a timed-out environment, and the next
event for that slot starts a fresh one (a cold start).

CLI (one copy): ``python -m tests.sims.lambda_async`` reads one JSON event per line on stdin,
writes one JSON result line per event on stdout, with the function's environment inherited.
"""

from __future__ import annotations

import heapq
import itertools
import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

RETRY_DELAYS = (60.0, 120.0)  # before the first and the second retry


class AsyncLambda:
    """Runs events through ``copies`` concurrent environments with Lambda's async retry policy."""

    def __init__(self, env: dict, copies: int = 20, timeout: float = 120.0,
                 retry_delays: tuple = RETRY_DELAYS) -> None:
        self.env, self.copies, self.timeout, self.retry_delays = env, copies, timeout, retry_delays
        self.dead: list = []  # (event, last error): the on-failure destination
        self.done = 0
        self.invocations = 0
        self.timeouts = 0
        self._pending: list = []  # heap of (ready at, seq, event, attempt)
        self._seq = itertools.count()
        self._open = 0  # events not yet delivered or dead
        self._lock = threading.Condition()

    def run(self, events: list) -> None:
        """Invoke every event (all arriving at once, a burst); return when each ended somewhere."""
        now = time.monotonic()
        with self._lock:
            for event in events:
                heapq.heappush(self._pending, (now, next(self._seq), event, 0))
            self._open = len(events)
        slots = [threading.Thread(target=self._slot, daemon=True) for _ in range(self.copies)]
        for slot in slots:
            slot.start()
        for slot in slots:
            slot.join()

    def _next(self) -> Optional[tuple]:
        with self._lock:
            while True:
                if self._open == 0:
                    return None
                if self._pending and self._pending[0][0] <= time.monotonic():
                    return heapq.heappop(self._pending)
                wait = (self._pending[0][0] - time.monotonic()) if self._pending else None
                self._lock.wait(timeout=wait)

    def _finish(self, event: dict, attempt: int, error: Optional[str]) -> None:
        with self._lock:
            self.invocations += 1
            if error is None:
                self.done += 1
                self._open -= 1
            elif attempt < len(self.retry_delays):
                ready = time.monotonic() + self.retry_delays[attempt]
                heapq.heappush(self._pending, (ready, next(self._seq), event, attempt + 1))
            else:
                self.dead.append((event, error))
                self._open -= 1
            self._lock.notify_all()

    def _slot(self) -> None:
        proc: Optional[subprocess.Popen] = None
        while True:
            job = self._next()
            if job is None:
                break
            _, _, event, attempt = job
            if proc is None:
                proc = self._spawn()
            proc.stdin.write(json.dumps(event) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            line = proc.stdout.readline() if ready else ""
            if not line:  # timed out (or crashed): Lambda ends the environment
                proc.kill()
                proc.wait()
                proc = None
                with self._lock:
                    self.timeouts += 1
                self._finish(event, attempt, f"Task timed out after {self.timeout:.0f} seconds")
                continue
            result = json.loads(line)
            self._finish(event, attempt, result.get("error"))
        if proc is not None:
            proc.stdin.close()
            proc.wait()

    def _spawn(self) -> subprocess.Popen:
        root = Path(__file__).resolve().parents[2]
        return subprocess.Popen([sys.executable, "-m", "tests.sims.lambda_async"], cwd=root, env=self.env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1)


def serve() -> int:
    """One execution environment: events in on stdin, results out on stdout."""
    from gdtrustar import lambda_handler
    from tests.sims.lambda_sqs import FakeContext

    timeout = float(__import__("os").environ.get("GDTRUSTAR_BENCH_TIMEOUT", "120"))
    for line in sys.stdin:
        try:
            lambda_handler.handler(json.loads(line), FakeContext(timeout))
            out = {}
        except Exception as exc:  # a function error: Lambda retries it
            out = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
