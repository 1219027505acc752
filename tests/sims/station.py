"""A TruSTAR Station (API v1.3) simulator: a real HTTP server on 127.0.0.1 for tests and benchmarks.

Stdlib only. It speaks what the ``trustar`` SDK 0.4.3 sends (docs/decisions.md, TruSTAR section) and
answers the way the real server is documented to answer. Where the real behaviour is
UNCONFIRMED the simulator picks the option that lets tests detect client bugs:

* a submit (``POST /reports``) whose externalTrackingId already exists in the enclave is stored AGAIN as a
  second report, so duplicates show up in :meth:`StationSim.reports_by_external_id`;
* ``POST /reports/upsert`` answers 201 (created) / 200 (updated) with a small JSON body
  ``{"id", "externalTrackingId", "created", "updated"}`` -- the real response body is UNCONFIRMED;
* ``GET /reports/{id}?idType=external`` for a missing report answers 404 (UNCONFIRMED, could be 400/403);
* ``DELETE`` answers 200 with an empty body (UNCONFIRMED).

Fault injection (``fail_next``, ``storm_429``, ``drop_next``, ``lose_response_next``, ``random_faults``,
``outage``, ``expire_tokens``), a rate limit and a latency knob are available while running.

The rate limit (``quota_per_minute`` calls per ``window_seconds``, API calls only, checked after
authentication) has three counting models, because Station's is unknown (docs/decisions.md#rate-limit):
``rate_model="sliding"`` (any 60 s, the default), ``"fixed"`` (windows of the clock) and
``"bucket"`` (a token bucket refilled every second, ``burst`` tokens deep, default one second's worth).
Each answers 429 with the ``waitTime`` (ms) after which the next call would be admitted. The models
are plain classes (``SlidingWindow``, ``FixedWindow``, ``TokenBucketLimit``) that take the time as an
argument, so pacing tests can run them on a scripted clock too.

CLI: ``python -m tests.sims.station --port 8765 [--latency 0.05] [--quota 600] [--model bucket]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import json
import math
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

API_PREFIX = "/api/1.3"
TOKEN_PATH = "/oauth/token"

#: kinds of API calls (everything under /api/1.3); "token" is the OAuth endpoint.
API_KINDS = frozenset({"enclaves", "upsert", "submit", "get", "put", "delete", "quotas", "other"})
ALL_KINDS = API_KINDS | {"token"}

EXPIRED_TOKEN = "Expired oauth2 access token"
INVALID_TOKEN = "Invalid oauth2 access token"
TOO_MANY_INDICATORS = (
    "Incident Report contains too many indicators or the file size is too large - Consider splitting into "
    "smaller reports. Max indicators extracted per report are 500"
)

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# --- indicator extraction (deliberately simple; the real extractor is far richer) --------------------
_URL_RE = re.compile(r"\bhttps?://[^\s\"'<>\\]+", re.IGNORECASE)
_IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
_HASH_RE = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{32})(?![0-9a-fA-F])")
# Restricted TLD list so JSON-ish text ("service.action", "os.py") is not counted as domains.
_DOMAIN_RE = re.compile(
    r"(?<![\w.-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:com|net|org|io|co|info|biz|gov|edu|mil|ru|cn|de|uk|xyz|top|online|site|club|ws|cc|tk|me|us)"
    r"(?![\w-])",
    re.IGNORECASE,
)


def count_indicators(text: str) -> int:
    """Number of distinct indicators (IPv4, domain, md5/sha256, URL) found in ``text``."""
    found: set[tuple[str, str]] = set()
    for kind, rx in (("url", _URL_RE), ("ip", _IPV4_RE), ("hash", _HASH_RE), ("domain", _DOMAIN_RE)):
        for m in rx.finditer(text):
            found.add((kind, m.group(0).lower()))
    return len(found)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _parse_time_began(value: Any) -> int | None:
    """Return epoch ms, or None if invalid. ``None`` means "now" (documented default)."""
    if value is None:
        return _now_ms()
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        # py3.9's fromisoformat wants +HH:MM and 3 or 6 fraction digits; accept +HHMM and 1-9 digits too
        m = re.match(r"^(.*[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)([+-]\d{2})(\d{2})$", s)
        if m:
            s = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
        s = re.sub(r"\.(\d{1,9})(?=[+-]\d{2}:\d{2}$)", lambda f: "." + f.group(1)[:6].ljust(6, "0"), s)
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            return None
        if dt.tzinfo is None or dt.utcoffset() is None:
            return None
        return int(dt.astimezone(timezone.utc).timestamp() * 1000)
    return None


@dataclass(frozen=True)
class Call:
    """One logged request. ``status`` is 0 for a dropped connection (no response at all);
    for a lost response (write applied, connection closed) it is the status the server would have sent."""

    method: str
    path: str
    query: dict
    status: int
    body_len: int  # request body length in bytes
    time: float  # time.monotonic() (or the sim's clock) when the request arrived
    token: str | None  # bearer token presented (None for the token endpoint / no header)
    kind: str  # token, enclaves, upsert, submit, get, put, delete, quotas, other
    fault: str | None = None  # None, "drop", "lost_response", "injected", "random", "outage", "quota"
    wait_ms: int | None = None  # the waitTime of a 429


@dataclass
class _Rule:
    remaining: int
    action: str  # "status" | "drop" | "lose"
    kinds: frozenset
    status: int = 500
    wait_ms: int = 1000


class _Drop(Exception):
    """Close the connection without a response."""


class _Reply:
    __slots__ = ("status", "body", "ctype")

    def __init__(self, status: int, body: Any = b"", ctype: str = "application/json"):
        self.status = status
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.body = body
        self.ctype = ctype


def _spring_error(status: int, message: str, path: str) -> _Reply:
    return _Reply(
        status,
        {
            "timestamp": _now_ms(),
            "status": status,
            "error": _REASONS.get(status, "Error"),
            "message": message,
            "path": path,
        },
    )


# --- rate-limit counting models (pure: the caller passes the time) ------------------------------------
class SlidingWindow:
    """At most ``quota`` calls in any ``window`` seconds; waitTime until the oldest one leaves it."""

    name = "sliding"

    def __init__(self, quota: int, window: float) -> None:
        self.quota, self.window = int(quota), float(window)
        self.hits: collections.deque = collections.deque()

    def admit(self, now: float) -> int | None:
        """None (admitted, counted) or the waitTime in ms."""
        hits = self.hits
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.quota:
            if not hits:  # quota 0
                return max(1, int(self.window * 1000))
            return max(1, math.ceil((hits[0] + self.window - now) * 1000))
        hits.append(now)
        return None

    def used(self, now: float) -> tuple[int, float]:
        """(calls counted now, when the counting period began) for ``/request-quotas``."""
        while self.hits and self.hits[0] <= now - self.window:
            self.hits.popleft()
        return len(self.hits), (self.hits[0] if self.hits else now)


class FixedWindow:
    """At most ``quota`` calls per window ``[k * window, (k + 1) * window)`` of the clock; waitTime to its end."""

    name = "fixed"

    def __init__(self, quota: int, window: float) -> None:
        self.quota, self.window = int(quota), float(window)
        self.start, self.count = -math.inf, 0

    def admit(self, now: float) -> int | None:
        start = math.floor(now / self.window) * self.window
        if start != self.start:
            self.start, self.count = start, 0
        if self.count >= self.quota:
            return max(1, math.ceil((self.start + self.window - now) * 1000))
        self.count += 1
        return None

    def used(self, now: float) -> tuple[int, float]:
        start = math.floor(now / self.window) * self.window
        return (self.count if start == self.start else 0), start


class TokenBucketLimit:
    """A bucket of ``burst`` tokens refilled at ``quota / window`` a second (default burst: 1 s worth, >= 1)."""

    name = "bucket"

    def __init__(self, quota: int, window: float, burst: float | None = None) -> None:
        self.quota, self.window = int(quota), float(window)
        self.rate = self.quota / self.window
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        self.tokens, self.last = self.burst, None

    def _refill(self, now: float) -> None:
        if self.last is not None and self.rate > 0:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now if self.last is None else max(self.last, now)

    def admit(self, now: float) -> int | None:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        if self.rate <= 0:
            return max(1, int(self.window * 1000))
        return max(1, math.ceil((1.0 - self.tokens) / self.rate * 1000))

    def used(self, now: float) -> tuple[int, float]:
        self._refill(now)
        return int(self.burst - self.tokens), now


RATE_MODELS = {"sliding": SlidingWindow, "fixed": FixedWindow, "bucket": TokenBucketLimit}


def make_limiter(model: str, quota: int, window: float, burst: float | None = None):
    """A counting model by name: ``sliding`` (default), ``fixed`` or ``bucket``."""
    if model not in RATE_MODELS:
        raise ValueError(f"unknown rate model {model!r}: one of {sorted(RATE_MODELS)}")
    if model == "bucket":
        return TokenBucketLimit(quota, window, burst)
    return RATE_MODELS[model](quota, window)


class StationSim:
    """In-process TruSTAR Station simulator. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        api_secret: str = "test-secret",
        enclaves: list[dict] | None = None,
        latency: float = 0.0,
        quota_per_minute: int | None = None,
        window_seconds: float = 60.0,
        rate_model: str = "sliding",
        burst: float | None = None,
        upsert_supported: bool = True,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl: float = 600.0,
        max_indicators: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api_key = api_key
        self.api_secret = api_secret
        if enclaves is None:
            enclaves = [
                {
                    "id": "enc-a",
                    "name": "Enclave A",
                    "type": "INTERNAL",
                    "read": True,
                    "create": True,
                    "update": True,
                },
                {
                    "id": "enc-b",
                    "name": "Enclave B",
                    "type": "INTERNAL",
                    "read": True,
                    "create": True,
                    "update": True,
                },
                {
                    "id": "enc-ro",
                    "name": "Read-only",
                    "type": "CLOSED",
                    "read": True,
                    "create": False,
                    "update": False,
                },
            ]
        self._enclaves = {e["id"]: dict(e) for e in enclaves}
        self._lock = threading.RLock()
        self._latency = float(latency)
        self._quota = quota_per_minute
        self._window = float(window_seconds)
        self._rate_model = rate_model
        self._burst = burst
        self._limiter = None
        self._reset_limiter()
        self._upsert_supported = bool(upsert_supported)
        self.token_ttl = float(token_ttl)
        self.max_indicators = int(max_indicators)
        self._clock = clock
        self._rng = random.Random(seed)
        self._host = host
        self._port = port

        self._by_id: dict[str, dict] = {}  # the store, insertion-ordered
        self._by_ext: dict[str, list[dict]] = {}  # externalTrackingId -> reports (any enclave), in order
        self._calls: list[Call] = []
        self._tokens: dict[str, float] = {}  # token -> expiry (clock); -inf = force-expired
        self._rules: list[_Rule] = []
        self._seen: collections.Counter = collections.Counter()
        self._triggers: list[tuple[int, str, Callable[[], None]]] = []
        self._random_rate = 0.0
        self._random_statuses: tuple = (500, 503)
        self._random_drop_share = 0.25
        self._outage_calls: int | None = None
        self._outage_deadline: float | None = None
        self._outage_active = False
        self._outage_mode = "error"
        self._outage_status = 503
        self._quota_guid = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.api_endpoint = ""
        self.auth_endpoint = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StationSim:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"sim": self})
        server = _Server((self._host, self._port), handler)
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.api_endpoint = self.url + API_PREFIX
        self.auth_endpoint = self.url + TOKEN_PATH
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="station-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StationSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    # ------------------------------------------------------------------ knobs
    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        with self._lock:
            self._latency = float(value)

    @property
    def quota_per_minute(self) -> int | None:
        with self._lock:
            return self._quota

    @quota_per_minute.setter
    def quota_per_minute(self, value: int | None) -> None:
        with self._lock:
            self._quota = value
            self._reset_limiter()

    @property
    def window_seconds(self) -> float:
        with self._lock:
            return self._window

    @window_seconds.setter
    def window_seconds(self, value: float) -> None:
        with self._lock:
            self._window = float(value)
            self._reset_limiter()

    @property
    def rate_model(self) -> str:
        """How the quota is counted: ``sliding`` (default), ``fixed`` windows, or a per-second ``bucket``."""
        with self._lock:
            return self._rate_model

    @rate_model.setter
    def rate_model(self, value: str) -> None:
        with self._lock:
            self._rate_model = value
            self._reset_limiter()

    def _reset_limiter(self) -> None:
        """A fresh counter (empty window, full bucket) for the current settings. Lock held or in __init__."""
        self._limiter = (None if self._quota is None
                         else make_limiter(self._rate_model, self._quota, self._window, self._burst))

    @property
    def upsert_supported(self) -> bool:
        with self._lock:
            return self._upsert_supported

    @upsert_supported.setter
    def upsert_supported(self, value: bool) -> None:
        with self._lock:
            self._upsert_supported = bool(value)

    @staticmethod
    def _kinds(kinds: Iterable[str] | None) -> frozenset:
        if kinds is None:
            return API_KINDS
        ks = frozenset(kinds)
        unknown = ks - ALL_KINDS
        if unknown:
            raise ValueError(f"unknown kinds: {sorted(unknown)}")
        return ks

    def fail_next(
        self, n: int, status: int = 500, kinds: set[str] | None = None, *, wait_ms: int = 1000
    ) -> None:
        """Next ``n`` matching calls (default: any API call, not the token endpoint) answer ``status``."""
        with self._lock:
            self._rules.append(_Rule(int(n), "status", self._kinds(kinds), int(status), int(wait_ms)))

    def storm_429(self, n: int, wait_ms: int, kinds: set[str] | None = None) -> None:
        self.fail_next(n, 429, kinds, wait_ms=wait_ms)

    def drop_next(self, n: int, kinds: set[str] | None = None) -> None:
        """Next ``n`` matching calls: connection closed with no response, request NOT applied."""
        with self._lock:
            self._rules.append(_Rule(int(n), "drop", self._kinds(kinds)))

    def lose_response_next(self, n: int, kinds: set[str] | None = None) -> None:
        """Next ``n`` matching calls: request APPLIED, then the connection is closed with no response."""
        with self._lock:
            self._rules.append(_Rule(int(n), "lose", self._kinds(kinds)))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self._random_rate = 0.0
            self._outage_active = False

    def random_faults(
        self, rate: float, statuses: Iterable[int] = (500, 503), drop_share: float = 0.25
    ) -> None:
        """Each API call fails with probability ``rate`` (``drop_share`` of them as drops); 0 disables."""
        with self._lock:
            self._random_rate = float(rate)
            self._random_statuses = tuple(statuses)
            self._random_drop_share = float(drop_share)

    def outage(
        self,
        n_calls: int | None = None,
        seconds: float | None = None,
        *,
        mode: str = "error",
        status: int = 503,
    ) -> None:
        """Every call incl. token calls fails (``status`` or, mode="drop", a dropped connection) for the next
        ``n_calls`` calls and/or until ``seconds`` from now; neither given = until ``outage(0)``."""
        if mode not in ("error", "drop"):
            raise ValueError("mode must be 'error' or 'drop'")
        with self._lock:
            if n_calls == 0 or seconds == 0:
                self._outage_active = False
                return
            self._outage_active = True
            self._outage_calls = None if n_calls is None else int(n_calls)
            self._outage_deadline = None if seconds is None else self._clock() + float(seconds)
            self._outage_mode = mode
            self._outage_status = int(status)

    def expire_tokens(self) -> None:
        with self._lock:
            for tok in self._tokens:
                self._tokens[tok] = -math.inf

    # ------------------------------------------------------------------ state
    @property
    def reports(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._by_id.values()]

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def tokens(self) -> list[str]:
        """All tokens ever issued (for leak checks)."""
        with self._lock:
            return list(self._tokens)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def reports_by_external_id(self) -> dict[tuple[str, str], list[dict]]:
        out: dict[tuple[str, str], list[dict]] = {}
        with self._lock:
            for r in self._by_id.values():
                ext = r.get("externalTrackingId")
                if ext is None or not r.get("enclaveIds"):
                    continue
                out.setdefault((r["enclaveIds"][0], ext), []).append(dict(r))
        return out

    def count(self, kind: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for c in self._calls
                if (kind is None or c.kind == kind) and (status is None or c.status == status)
            )

    def add_report(
        self,
        *,
        enclave: str = "enc-a",
        external_id: str | None = None,
        title: str = "seeded",
        body: str = "seeded body",
        time_began: int | None = None,
        external_url: str | None = None,
    ) -> dict:
        """Store a report directly (no HTTP); returns a copy of it."""
        with self._lock:
            rep = self._store_new(
                {
                    "title": title,
                    "reportBody": body,
                    "externalTrackingId": external_id,
                    "externalUrl": external_url,
                },
                enclave,
                time_began if time_began is not None else _now_ms(),
            )
            return dict(rep)

    # ------------------------------------------------------------------ internals (call with lock held)
    def _store_new(self, body: dict, enclave: str, time_began: int) -> dict:
        now = _now_ms()
        rep = {
            "id": str(uuid.uuid4()),
            "title": body.get("title"),
            "reportBody": body.get("reportBody"),
            "timeBegan": time_began,
            "externalTrackingId": body.get("externalTrackingId"),
            "externalUrl": body.get("externalUrl"),
            "distributionType": "ENCLAVE",
            "enclaveIds": [enclave],
            "created": now,
            "updated": now,
        }
        self._by_id[rep["id"]] = rep
        self._index(rep)
        return rep

    def _index(self, rep: dict) -> None:
        if rep.get("externalTrackingId") is not None:
            self._by_ext.setdefault(rep["externalTrackingId"], []).append(rep)

    def _unindex(self, rep: dict) -> None:
        lst = self._by_ext.get(rep.get("externalTrackingId"))  # type: ignore[arg-type]
        if lst:
            for i, r in enumerate(lst):
                if r is rep:
                    del lst[i]
                    break
            if not lst:
                del self._by_ext[rep["externalTrackingId"]]

    def _find(self, report_id: str, id_type: str, enclave: str | None = None) -> dict | None:
        if id_type == "external":
            for r in self._by_ext.get(report_id, ()):
                if enclave is None or (r["enclaveIds"] and r["enclaveIds"][0] == enclave):
                    return r
            return None
        return self._by_id.get(report_id)

    def _issue_token(self) -> str:
        tok = secrets.token_hex(16)
        with self._lock:
            self._tokens[tok] = self._clock() + self.token_ttl
        return tok

    def after(self, calls: int, kind: str, action: Callable[[], None]) -> None:
        """Run ``action`` (any knob, or e.g. a signal to the client) when call ``calls + 1`` of ``kind``
        arrives, before it is served: exactly ``calls`` such calls see the server as it was,
        whatever the client's concurrency. Deterministic mid-run faults without sleeps or polling."""
        with self._lock:
            self._triggers.append((int(calls), kind, action))

    def _claim_fault(self, kind: str, now: float) -> tuple[str, int, int, str] | None:
        """Return (action, status, wait_ms, fault_label) for this call, or None. Lock held."""
        self._seen[kind] += 1
        for trigger in list(self._triggers):
            calls, wanted, action = trigger
            if wanted == kind and self._seen[kind] > calls:
                self._triggers.remove(trigger)
                action()
        if self._outage_active:
            if self._outage_deadline is not None and now >= self._outage_deadline:
                self._outage_active = False
            else:
                if self._outage_calls is not None:
                    self._outage_calls -= 1
                    if self._outage_calls <= 0:
                        self._outage_active = False
                action = "drop" if self._outage_mode == "drop" else "status"
                return action, self._outage_status, 1000, "outage"
        for rule in self._rules:
            if rule.remaining > 0 and kind in rule.kinds:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
                label = {"status": "injected", "drop": "drop", "lose": "lost_response"}[rule.action]
                return rule.action, rule.status, rule.wait_ms, label
        if kind in API_KINDS and self._random_rate > 0 and self._rng.random() < self._random_rate:
            if self._rng.random() < self._random_drop_share:
                return "drop", 0, 0, "random"
            return "status", self._rng.choice(self._random_statuses), 1000, "random"
        return None

    def _check_quota(self, now: float) -> int | None:
        """Admit the call (return None) or return waitTime ms. Lock held."""
        return None if self._limiter is None else self._limiter.admit(now)

    # ------------------------------------------------------------------ request handling
    def _handle(self, h: _Handler, method: str) -> None:
        lat = self._latency
        if lat > 0:
            time.sleep(lat)
        split = urlsplit(h.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = h.read_body()
        kind = _classify(method, path)
        auth = h.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        now = self._clock()

        with self._lock:
            served = path == TOKEN_PATH or path.startswith(API_PREFIX + "/")
            fault = self._claim_fault(kind, now) if served else None
        lose = False
        label = None
        if fault is not None:
            action, status, wait_ms, label = fault
            if action == "drop":
                self._log(method, path, query, 0, len(body), now, token, kind, label)
                raise _Drop()
            if action == "status":
                if status == 429:
                    reply = _too_many(wait_ms)
                else:
                    reply = _spring_error(status, f"Simulated {status} error", path)
                self._log(method, path, query, status, len(body), now, token, kind, label,
                          max(1, int(wait_ms)) if status == 429 else None)
                h.send(reply)
                return
            lose = action == "lose"

        reply = self._route(method, path, query, body, kind, token, h, now)
        wait = json.loads(reply.body)["waitTime"] if reply.status == 429 else None
        if reply.status == 429 and label is None:
            label = "quota"
        self._log(method, path, query, reply.status, len(body), now, token, kind, label, wait)
        if lose:
            raise _Drop()
        h.send(reply)

    def _log(self, method, path, query, status, body_len, now, token, kind, fault, wait_ms=None) -> None:
        with self._lock:
            self._calls.append(Call(method, path, query, status, body_len, now, token, kind, fault, wait_ms))

    def _route(self, method, path, query, body: bytes, kind, token, h: _Handler, now: float) -> _Reply:
        if path == TOKEN_PATH:
            if method != "POST":
                return _spring_error(405, f"Request method '{method}' not supported", path)
            return self._token(h, body)
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            return _spring_error(404, "No message available", path)

        # authentication
        if token is None:
            return _Reply(
                401,
                {
                    "error": "unauthorized",
                    "error_description": "Full authentication is required to access this resource",
                },
            )
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return _Reply(400, {"error": "invalid_token", "error_description": INVALID_TOKEN})
        if now >= expiry:
            return _Reply(400, {"error": "invalid_token", "error_description": EXPIRED_TOKEN})

        # rate limit
        with self._lock:
            wait = self._check_quota(now)
        if wait is not None:
            return _too_many(wait)

        sub = path[len(API_PREFIX) :]
        if sub == "/enclaves" and method == "GET":
            with self._lock:
                return _Reply(
                    200,
                    [
                        {
                            "id": e["id"],
                            "name": e.get("name", e["id"]),
                            "type": e.get("type", "INTERNAL"),
                            "templateName": None,
                            "workflowSupported": False,
                            "read": bool(e.get("read", True)),
                            "create": bool(e.get("create", False)),
                            "update": bool(e.get("update", False)),
                        }
                        for e in self._enclaves.values()
                    ],
                )
        if sub == "/request-quotas" and method == "GET":
            return self._quotas(now)
        if sub == "/ping" and method == "GET":
            return _Reply(200, "pong\n", "text/plain")
        if sub == "/reports" and method == "POST":
            return self._submit(body, path)
        if sub == "/reports/upsert" and method == "POST":
            if not self._upsert_supported:
                return _Reply(
                    404,
                    {
                        "timestamp": _now_ms(),
                        "status": 404,
                        "error": "Not Found",
                        "message": f"No handler found for POST {path}",
                        "path": path,
                    },
                )
            return self._upsert(body, query, path)
        if sub.startswith("/reports/") and sub != "/reports/upsert":
            rest = sub[len("/reports/") :]
            id_type = query.get("idType", "internal").lower()
            if id_type not in ("internal", "external"):
                return _spring_error(400, f"Invalid idType: {query.get('idType')}", path)
            if rest.endswith("/status") and method == "GET":
                rid = unquote(rest[: -len("/status")])
                with self._lock:
                    rep = self._find(rid, id_type)
                    if rep is None:
                        return _spring_error(404, "Report not found", path)
                    return _Reply(
                        200, {"id": rep["id"], "status": "SUBMISSION_SUCCESS", "errorMessage": None}
                    )
            if rest and "/" not in rest:
                rid = unquote(rest)
                if method == "GET":
                    with self._lock:
                        rep = self._find(rid, id_type)
                        if rep is None:
                            return _spring_error(404, "Report not found", path)
                        return _Reply(200, dict(rep))
                if method == "PUT":
                    return self._put(rid, id_type, body, path)
                if method == "DELETE":
                    with self._lock:
                        rep = self._find(rid, id_type)
                        if rep is None:
                            return _spring_error(404, "Report not found", path)
                        self._unindex(rep)
                        del self._by_id[rep["id"]]
                    return _Reply(200, b"")
        return _spring_error(404, f"No handler found for {method} {path}", path)

    def _token(self, h: _Handler, body: bytes) -> _Reply:
        auth = h.headers.get("Authorization") or ""
        ok = False
        if auth[:6].lower() == "basic ":
            try:
                user, _, pwd = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
                ok = secrets.compare_digest(user, self.api_key) and secrets.compare_digest(
                    pwd, self.api_secret
                )
            except (binascii.Error, UnicodeDecodeError, ValueError):
                ok = False
        if not ok:
            return _Reply(401, {"error": "unauthorized", "error_description": "Bad credentials"})
        form = parse_qs(body.decode("utf-8", "replace"))
        if form.get("grant_type", [None])[-1] != "client_credentials":
            return _Reply(
                400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}
            )
        tok = self._issue_token()
        return _Reply(200, {"access_token": tok, "token_type": "bearer", "expires_in": int(self.token_ttl)})

    def _quotas(self, now: float) -> _Reply:
        with self._lock:
            window_ms = int(self._window * 1000)
            used, oldest = self._limiter.used(now) if self._limiter is not None else (0, now)
        wall = _now_ms()
        last = wall - int((now - oldest) * 1000)
        return _Reply(
            200,
            [
                {
                    "guid": self._quota_guid,
                    "maxRequests": self._quota if self._quota is not None else 3000,
                    "usedRequests": used,
                    "timeWindow": window_ms,
                    "lastResetTime": last,
                    "nextResetTime": last + window_ms,
                }
            ],
        )

    def _validate(
        self,
        body: bytes,
        path: str,
        *,
        permission: str = "create",
        require: tuple[str, ...] = ("title", "reportBody"),
    ) -> tuple[dict, str, int] | _Reply:
        """Validation shared by submit/upsert/put: (data, enclave, timeBegan ms) or an error reply."""
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            return _spring_error(400, "JSON parse error: malformed request body", path)
        if not isinstance(data, dict):
            return _spring_error(400, "Required request body is missing or not a JSON object", path)
        for field in require:
            val = data.get(field)
            if field in ("title", "reportBody"):
                if not isinstance(val, str) or not val.strip():
                    return _spring_error(400, f"{field} must not be empty", path)
            elif val is None:
                return _spring_error(400, f"{field} must not be null", path)
        enc = data.get("enclaveIds")
        if not isinstance(enc, list) or len(enc) != 1 or not isinstance(enc[0], str):
            return _spring_error(400, "enclaveIds must be an array of exactly one enclave ID", path)
        with self._lock:
            e = self._enclaves.get(enc[0])
            allowed = e is not None and bool(e.get(permission))
        if not allowed:
            return _Reply(
                403,
                {
                    "timestamp": _now_ms(),
                    "status": 403,
                    "error": "Forbidden",
                    "message": f"User does not have {permission} permission for enclave {enc[0]}",
                    "path": path,
                },
            )
        tb = _parse_time_began(data.get("timeBegan"))
        if tb is None:
            return _spring_error(
                400,
                f"Invalid timeBegan: {data.get('timeBegan')!r} (ISO-8601 with "
                "timezone or epoch milliseconds expected)",
                path,
            )
        url = data.get("externalUrl")
        if url is not None and (not isinstance(url, str) or len(url) > 500):
            return _spring_error(400, "externalUrl must be at most 500 characters", path)
        ext = data.get("externalTrackingId")
        if ext is not None and not isinstance(ext, str):
            return _spring_error(400, "externalTrackingId must be a string", path)
        text = f"{data.get('title') or ''}\n{data.get('reportBody') or ''}"
        if count_indicators(text) > self.max_indicators:
            return _Reply(
                413,
                {
                    "status": 413,
                    "timestamp": _now_ms(),
                    "message": TOO_MANY_INDICATORS,
                    "path": path,
                    "error": "Payload Too Large",
                },
            )
        return data, enc[0], tb

    def _submit(self, body: bytes, path: str) -> _Reply:
        v = self._validate(body, path)
        if isinstance(v, _Reply):
            return v
        data, enclave, tb = v
        with self._lock:
            rep = self._store_new(data, enclave, tb)  # duplicates are stored again (see module docstring)
        return _Reply(200, rep["id"], "text/plain")

    def _upsert(self, body: bytes, query: dict, path: str) -> _Reply:
        id_type = query.get("idType", "internal").lower()
        mode = query.get("mode", "OVERRIDE").upper()
        if id_type not in ("internal", "external"):
            return _spring_error(400, f"Invalid idType: {query.get('idType')}", path)
        if mode not in ("OVERRIDE", "APPEND"):
            return _spring_error(400, f"Invalid mode: {query.get('mode')}", path)
        v = self._validate(body, path)
        if isinstance(v, _Reply):
            return v
        data, enclave, tb = v
        ext = data.get("externalTrackingId")
        internal_id = data.get("id") or data.get("guid")
        if id_type == "external" and not ext:
            return _spring_error(400, "externalTrackingId is required when idType=external", path)
        # Response body below is an assumption: the real upsert response is UNCONFIRMED (docs/decisions.md#upsert).
        with self._lock:  # atomic find-or-create
            existing = None
            if id_type == "external":
                existing = self._find(ext, "external", enclave)
            elif internal_id:
                existing = self._by_id.get(internal_id)
            if existing is None:
                rep = self._store_new(data, enclave, tb)
                status = 201
            else:
                rep = existing
                if mode == "APPEND":
                    rep["reportBody"] = f"{rep.get('reportBody') or ''}\n{data['reportBody']}"
                else:
                    rep["reportBody"] = data["reportBody"]
                rep["title"] = data["title"]
                rep["timeBegan"] = tb
                rep["externalUrl"] = data.get("externalUrl")
                if ext is not None and ext != rep.get("externalTrackingId"):
                    self._unindex(rep)
                    rep["externalTrackingId"] = ext
                    self._index(rep)
                rep["updated"] = max(_now_ms(), rep["updated"] + 1)
                status = 200
            out = {
                "id": rep["id"],
                "externalTrackingId": rep["externalTrackingId"],
                "created": rep["created"],
                "updated": rep["updated"],
            }
        return _Reply(status, out)

    def _put(self, rid: str, id_type: str, body: bytes, path: str) -> _Reply:
        v = self._validate(
            body,
            path,
            permission="update",
            require=("title", "reportBody", "timeBegan", "externalUrl", "externalTrackingId", "enclaveIds"),
        )
        if isinstance(v, _Reply):
            if v.status == 403:
                with self._lock:
                    if self._find(rid, id_type) is None:
                        return _spring_error(404, "Report not found", path)
            return v
        data, enclave, tb = v
        with self._lock:
            rep = self._find(rid, id_type)
            if rep is None:
                return _spring_error(404, "Report not found", path)
            moved = rep.get("externalTrackingId") != data["externalTrackingId"]
            if moved:
                self._unindex(rep)
            rep.update(
                title=data["title"],
                reportBody=data["reportBody"],
                timeBegan=tb,
                externalUrl=data["externalUrl"],
                externalTrackingId=data["externalTrackingId"],
                enclaveIds=[enclave],
                updated=max(_now_ms(), rep["updated"] + 1),
            )
            if moved:
                self._index(rep)
        return _Reply(200, b"")


def _too_many(wait_ms: int) -> _Reply:
    wait_ms = max(1, int(wait_ms))
    return _Reply(
        429,
        {
            "message": f"Request limit exceeded for the current time period.  Please wait {wait_ms} "
            "milliseconds before making more requests.",
            "waitTime": wait_ms,
        },
    )


def _classify(method: str, path: str) -> str:
    if path == TOKEN_PATH:
        return "token" if method == "POST" else "other"
    if not path.startswith(API_PREFIX + "/"):
        return "other"
    sub = path[len(API_PREFIX) :]
    if sub == "/enclaves" and method == "GET":
        return "enclaves"
    if sub == "/request-quotas" and method == "GET":
        return "quotas"
    if sub == "/reports/upsert" and method == "POST":
        return "upsert"
    if sub == "/reports" and method == "POST":
        return "submit"
    if sub.startswith("/reports/") and "/" not in sub[len("/reports/") :]:
        return {"GET": "get", "PUT": "put", "DELETE": "delete"}.get(method, "other")
    return "other"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # default 5 resets connections under bursts of concurrent clients
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    sim: StationSim  # bound per server in StationSim.start()
    protocol_version = "HTTP/1.1"
    server_version = "StationSim/1.0"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # silence access logs
        pass

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        if reply.body or reply.ctype != "application/json":
            self.send_header(
                "Content-Type", reply.ctype + ("" if "charset" in reply.ctype else ";charset=UTF-8")
            )
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Trace-Id", uuid.uuid4().hex)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if reply.body and self.command != "HEAD":
            self.wfile.write(reply.body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _any(self) -> None:
        try:
            self.sim._handle(self, self.command)
        except _Drop:
            self._drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - a sim bug should surface as a 500, not a hang
            try:
                self.send(_spring_error(500, f"StationSim internal error: {exc!r}", self.path))
            except OSError:
                self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sims.station", description="TruSTAR Station simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    p.add_argument("--quota", type=int, default=None, help="max API calls per window (default: unlimited)")
    p.add_argument("--window", type=float, default=60.0, help="quota window in seconds")
    p.add_argument("--model", choices=sorted(RATE_MODELS), default="sliding", help="how the quota is counted")
    p.add_argument("--burst", type=float, default=None, help="bucket model: tokens deep (default 1 s worth)")
    p.add_argument("--no-upsert", action="store_true", help="answer 404 on POST /reports/upsert")
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--api-secret", default="test-secret")
    a = p.parse_args(argv)
    sim = StationSim(
        api_key=a.api_key,
        api_secret=a.api_secret,
        latency=a.latency,
        quota_per_minute=a.quota,
        window_seconds=a.window,
        rate_model=a.model,
        burst=a.burst,
        upsert_supported=not a.no_upsert,
        host=a.host,
        port=a.port,
    )
    stop = threading.Event()  # set by Ctrl-C or SIGTERM at any moment, even before the wait below starts
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sim.start()
    print(f"StationSim listening on {sim.url}")
    print(f"  api endpoint:  {sim.api_endpoint}")
    print(f"  auth endpoint: {sim.auth_endpoint}")
    print("Sample environment:")
    print(f"TRUSTAR_API_ENDPOINT={sim.api_endpoint}")
    print(f"TRUSTAR_AUTH_ENDPOINT={sim.auth_endpoint}")
    print(f"TRUSTAR_API_KEY={a.api_key}")
    print(f"TRUSTAR_API_SECRET={a.api_secret}")
    print("TRUSTAR_ENCLAVE_IDS=enc-a")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait lets the interpreter run the signal handler promptly
            pass
    finally:
        sim.stop()
        print(f"stopped; {len(sim.reports)} reports stored, {len(sim.calls)} calls served", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
