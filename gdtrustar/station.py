"""The TruSTAR side: one SDK client per worker thread, keyed upserts, flow control and retries.

Writes go through the documented ``POST /reports/upsert?idType=external&mode=OVERRIDE``
(docs/decisions.md#upsert) using the SDK's own request machinery. Because the write is keyed by
``externalTrackingId`` it is safe to repeat after a lost response. A Station without that endpoint
is detected once (404/405) and the whole run falls back to look-up-then-submit/update, which looks
up again before every retry, so a lost response never becomes a second report.

The SDK (docs/decisions.md#oauth-token, #rate-limit, #sdk-threads) is not thread-safe, has no
timeout except on submit, sleeps inside ``request`` on 429, crashes on a 429 without ``waitTime``,
and with ``retry=True`` refreshes a refused token and repeats forever, unpaced. We build it with
``retry=False`` and do those parts ourselves: every call (token calls included) takes a slot from
the shared ``Pacer`` and has a timeout; the workers share one OAuth token (``TokenSource``), so a
run makes one token call, not one per thread; a refused token is refreshed at most ``MAX_REFRESHES``
times per call, then the call fails with ``TokenRefusedError``.

Retries (``StationClient.with_retries``): a 429 is flow control, never an attempt (the pacer pauses
everyone); 5xx, timeouts and dropped connections get ``Backoff.attempts`` with capped full-jitter
back-off. What bounds one finding is time: ``FINDING_DEADLINE`` from its first try, or the earlier
``StationClient.deadline`` (the Lambda's), and a single 429 asking for more than ``MAX_SERVER_WAIT``
(a spent quota) fails the finding at once without pausing anyone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import quote

import requests

from gdtrustar import __version__
from gdtrustar.errors import (
    ConfigError,
    DeadlineExceededError,
    EndpointMissingError,
    PermanentDeliveryError,
    RetriableError,
    TokenRefusedError,
)
from gdtrustar.mapper import Report
from gdtrustar.pacing import Backoff, Pacer
from gdtrustar.responses import classify, parse_upsert
from gdtrustar.sdk import TruStar
from gdtrustar.settings import Settings
from gdtrustar.tokens import MAX_REFRESHES, TIMEOUT, SharedTokenApiClient, TokenSource

log = logging.getLogger(__name__)
MAX_SERVER_WAIT = 300.0  # longest 429 waitTime (seconds) we sit out: longer means a spent quota
FINDING_DEADLINE = 15 * 60.0  # longest one finding may take, waits included, before it is failed


@dataclass(frozen=True)
class WriteResult:
    """What Station told us about one write; ``existed`` is None when it did not say."""

    report_id: Optional[str]
    existed: Optional[bool]
    calls: int


class UpsertSupport:
    """Run-wide switch: flips once to the fallback path when Station lacks the upsert endpoint."""

    def __init__(self) -> None:
        self.available = True
        self._lock = threading.Lock()

    def disable(self) -> None:
        with self._lock:
            if self.available:
                log.warning("Station has no /reports/upsert; using look-up then submit/update for this run")
            self.available = False


def make_sdk(settings: Settings) -> TruStar:
    """Build one SDK client (one per thread: the SDK is not thread-safe)."""
    settings.require_credentials()
    ts = TruStar(config={
        "user_api_key": settings.api_key,
        "user_api_secret": settings.api_secret,
        "auth_endpoint": settings.auth_endpoint,
        "api_endpoint": settings.api_endpoint,
        "station_base_url": settings.station_url,
        "client_metatag": f"gdtrustar/{__version__}",
        "retry": False,  # no unbounded refresh loop and no sleeping on 429 inside the SDK: we do both
        "verify": True,
    })
    # Swapping the class only changes what a refused token does; every other method is the SDK's own.
    ts._client.__class__ = SharedTokenApiClient
    return ts


class StationClient:
    """One worker's view of Station: paced, retried, keyed writes.

    ``deadline`` (an absolute ``time.monotonic()`` value, default None) may be set at any time: no
    wait of a write then ends after it; a write whose next wait would raises ``DeadlineExceededError``
    without sleeping.
    """

    def __init__(
        self,
        settings: Settings,
        pacer: Pacer,
        upsert: UpsertSupport,
        backoff: Backoff,
        sleep: Callable[[float], None],
        tokens: Optional[TokenSource] = None,
    ) -> None:
        self.settings = settings
        self.sdk = make_sdk(settings)
        self.pacer = pacer
        self.upsert_support = upsert
        self.backoff = backoff
        self.sleep = sleep
        self.tokens = tokens or TokenSource(pacer)
        self.deadline: Optional[float] = None

    def _call(self, method: str, path: str, deadline: Optional[float] = None, **kwargs: Any) -> requests.Response:
        """One paced SDK call (token first if needed); raises our error types."""
        client = self.sdk._client
        for _ in range(MAX_REFRESHES + 1):
            ticket = None
            try:
                if client.token is None:
                    client.token = self.tokens.get(client, client.refused, deadline)
                ticket = self.pacer.acquire(deadline)
                response = client.request(method, path, timeout=TIMEOUT, **kwargs)
            except Exception as exc:  # the SDK raises HTTPError, requests errors; ours pass through classify
                if ticket is not None and client.token is None:
                    continue  # Station refused the token (expired/invalid): the next turn fetches one
                error = classify(exc, client.last_response)
                if isinstance(error, RetriableError) and error.wait is not None and error.wait <= MAX_SERVER_WAIT:
                    self.pacer.congested(ticket, error.wait)  # a longer wait (spent quota) pauses nobody
                raise error from exc
            self.pacer.accepted(ticket)
            return response
        raise TokenRefusedError(f"Station refused {MAX_REFRESHES + 1} fresh OAuth tokens in a row as expired or "
                                "invalid (a Station node that does not know another's tokens, or a zero TTL)")

    def check_enclaves(self, enclave_ids: tuple[str, ...]) -> None:
        """Fail early unless the credentials can create reports in every enclave.

        ``ConfigError`` (exit 2) is the user's to fix; a ``RetriableError`` means Station could not be
        reached (the run lists its findings instead, exit 1).
        """
        response = self.with_retries(lambda deadline: self._call("GET", "enclaves", deadline))
        by_id = {str(e.get("id") or e.get("guid")): e for e in response.json()}
        for enclave_id in enclave_ids:
            enclave = by_id.get(enclave_id)
            if enclave is None:
                raise ConfigError(f"enclave {enclave_id} is not visible to this API key")
            if not enclave.get("create"):
                raise ConfigError(f"this API key cannot create reports in enclave {enclave_id}")

    def with_retries(self, attempt: Callable[[Optional[float]], Any]) -> Any:
        """Run ``attempt(deadline)`` until it succeeds, fails permanently, or retries or time run out."""
        deadline = self.pacer.clock() + FINDING_DEADLINE
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        tries, last = 0, None
        while True:
            try:
                return attempt(deadline)
            except DeadlineExceededError as exc:
                raise DeadlineExceededError(f"{exc}; last error: {last}" if last else str(exc)) from exc
            except RetriableError as exc:
                last = exc
                if exc.wait is not None:  # a 429: the pacer paused everyone; not an attempt
                    if exc.wait > MAX_SERVER_WAIT:  # a spent quota: fail this finding, pause nobody
                        raise
                    continue
                tries += 1
                if tries >= self.backoff.attempts:
                    raise
                self._back_off(tries, deadline, exc)

    def _back_off(self, tries: int, deadline: float, exc: Exception) -> None:
        delay = self.backoff.delay(tries)
        if self.pacer.clock() + delay > deadline:
            raise DeadlineExceededError(f"retry {tries} would wait past the deadline; last error: {exc}") from exc
        log.info("retry %d after %.2fs: %s", tries, delay, exc)
        if delay > 0:
            self.sleep(delay)

    def write(self, report: Report) -> WriteResult:
        """Create or replace the report keyed by its external id; exactly one report per key."""
        counter = [0]

        def attempt(deadline: Optional[float]) -> WriteResult:
            if self.upsert_support.available:
                try:
                    return self._upsert(report, counter, deadline)
                except EndpointMissingError:
                    self.upsert_support.disable()
            return self._lookup_then_write(report, counter, deadline)

        return self.with_retries(attempt)

    def _upsert(self, report: Report, counter: list, deadline: Optional[float]) -> WriteResult:
        counter[0] += 1
        try:
            response = self._call("POST", "reports/upsert", deadline,
                                  params={"idType": "external", "mode": "OVERRIDE"},
                                  data=json.dumps(report.payload()))
        except PermanentDeliveryError as exc:
            if exc.status in (404, 405, 501):
                raise EndpointMissingError(str(exc)) from exc
            raise
        report_id, existed = parse_upsert(response)
        return WriteResult(report_id, existed, counter[0])

    def _lookup_then_write(self, report: Report, counter: list, deadline: Optional[float]) -> WriteResult:
        existing = self.lookup(report.external_id, counter, deadline)
        body = json.dumps(report.payload())
        counter[0] += 1
        if existing is None:
            response = self._call("POST", "reports", deadline, data=body)
            return WriteResult(response.text.strip().strip('"') or None, False, counter[0])
        self._call("PUT", f"reports/{quote(report.external_id, safe='')}", deadline,
                   params={"idType": "external"}, data=body)
        return WriteResult(existing.get("id"), True, counter[0])

    def lookup(self, external_id: str, counter: Optional[list] = None,
               deadline: Optional[float] = None) -> Optional[dict]:
        """The report with this external id, or None when Station answers 404."""
        if counter is not None:
            counter[0] += 1
        try:
            return self._call("GET", f"reports/{quote(external_id, safe='')}", deadline,
                              params={"idType": "external"}).json()
        except PermanentDeliveryError as exc:
            if exc.status == 404:
                return None
            raise


def backoff_from_env() -> Backoff:
    """Retry tuning knobs (documented in README) for slow links or fast tests."""
    return Backoff(
        base=float(os.environ.get("GDTRUSTAR_BACKOFF_BASE", "0.5")),
        cap=float(os.environ.get("GDTRUSTAR_BACKOFF_CAP", "20")),
        attempts=int(os.environ.get("GDTRUSTAR_RETRY_ATTEMPTS", "6")),
    )


def station_factory(
    settings: Settings,
    bucket: Optional[Pacer] = None,
    *,
    sleep: Optional[Callable[[float], None]] = None,
) -> Callable[[], StationClient]:
    """A factory of per-thread Station clients sharing one pacer, one token and one upsert switch.

    ``bucket`` is the run's pacer (a new one at ``settings.max_rate`` when None); ``sleep`` is used
    for back-off (default: the pacer's clock's ``time.sleep``; the CLI passes an interruptible one).
    """
    pacer = bucket or Pacer(settings.max_rate)
    upsert = UpsertSupport()
    backoff = backoff_from_env()
    tokens = TokenSource(pacer)
    lock = threading.Lock()

    def make() -> StationClient:
        with lock:  # SDK construction touches module-level logging state
            return StationClient(settings, pacer, upsert, backoff, sleep or time.sleep, tokens)

    return make
