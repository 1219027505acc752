"""The TruSTAR API 1.3 backend: the report payload, and keyed upserts through the trustar SDK.

``payload`` is the v1.3 report JSON (docs/decisions.md#report-fields); ``open_writers`` gives the
run's per-thread ``StationClient``s, the ``writer.Writer``s ``backends.py`` hands the engine.

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
times per call, then the call fails with ``TokenRefusedError``. Pacing, 429 flow control, back-off
and deadlines are the backend-neutral loop in ``retrying.py``; ``responses.classify`` turns what
the SDK raised into the error classes that loop knows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import quote

import requests

from gdtrustar import __version__
from gdtrustar.errors import ConfigError, EndpointMissingError, PermanentDeliveryError, TokenRefusedError
from gdtrustar.mapper import Report
from gdtrustar.pacing import Backoff, Pacer
from gdtrustar.responses import classify, parse_upsert
from gdtrustar.retrying import Retrier, backoff_from_env
from gdtrustar.sdk import TruStar
from gdtrustar.settings import Settings
from gdtrustar.tokens import MAX_REFRESHES, TIMEOUT, SharedTokenApiClient, TokenSource
from gdtrustar.writer import Backend, Payload, WriteResult

log = logging.getLogger(__name__)


def payload(report: Report) -> Payload:
    """Return the v1.3 report JSON (docs/decisions.md#report-fields); an empty timeBegan lets Station use now."""
    return {"title": report.title, "reportBody": report.body, "timeBegan": report.time_began or None,
            "externalTrackingId": report.external_id, "externalUrl": report.external_url,
            "enclaveIds": [report.enclave_id], "distributionType": "ENCLAVE"}


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


class _TokenDropped(Exception):
    """Station refused the token of a call (expired or invalid): the call's next turn fetches one."""


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
    """One worker's view of Station (a ``writer.Writer``): paced, retried, keyed writes.

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
        self.retrier = Retrier(pacer, backoff, sleep)
        self.upsert_support = upsert
        self.tokens = tokens or TokenSource(pacer)
        self.deadline: Optional[float] = None

    def _call(self, method: str, path: str, deadline: Optional[float], **kwargs: Any) -> requests.Response:
        """One paced SDK call (a token first if none is held); raises our error types."""
        for _ in range(MAX_REFRESHES + 1):
            self._ensure_token(deadline)
            try:
                return self.retrier.paced(lambda: self._send(method, path, kwargs), deadline)
            except _TokenDropped:
                continue
        raise TokenRefusedError(f"Station refused {MAX_REFRESHES + 1} fresh OAuth tokens in a row as expired or "
                                "invalid (a Station node that does not know another's tokens, or a zero TTL)")

    def _ensure_token(self, deadline: Optional[float]) -> None:
        client = self.sdk._client
        if client.token is not None:
            return
        try:
            client.token = self.tokens.get(client, client.refused, deadline)
        except Exception as exc:  # requests errors, or ours (pacing) passed through by classify
            error = classify(exc, client.last_response)
            self.retrier.congested(None, error)  # a 429 on the token call pauses everyone too
            raise error from exc

    def _send(self, method: str, path: str, kwargs: dict[str, Any]) -> requests.Response:
        client = self.sdk._client
        try:
            response: requests.Response = client.request(method, path, timeout=TIMEOUT, **kwargs)
        except Exception as exc:  # the SDK raises HTTPError, requests errors
            if client.token is None:
                raise _TokenDropped from exc  # SharedTokenApiClient dropped the refused token
            raise classify(exc, client.last_response) from exc
        return response

    def check(self, enclave_ids: tuple[str, ...]) -> None:
        """Fail early unless the credentials can create reports in every enclave.

        ``ConfigError`` (exit 2) is the user's to fix; a ``RetriableError`` means Station could not be
        reached (the run lists its findings instead, exit 1).
        """
        response = self.retrier.run(lambda deadline: self._call("GET", "enclaves", deadline), self.deadline)
        by_id = {str(e.get("id") or e.get("guid")): e for e in response.json()}
        for enclave_id in enclave_ids:
            enclave = by_id.get(enclave_id)
            if enclave is None:
                raise ConfigError(f"enclave {enclave_id} is not visible to this API key")
            if not enclave.get("create"):
                raise ConfigError(f"this API key cannot create reports in enclave {enclave_id}")

    def write(self, report: Report) -> WriteResult:
        """Create or replace the report keyed by its external id; exactly one report per key."""
        counter = [0]

        def attempt(deadline: float) -> WriteResult:
            if self.upsert_support.available:
                try:
                    return self._upsert(report, counter, deadline)
                except EndpointMissingError:
                    self.upsert_support.disable()
            return self._lookup_then_write(report, counter, deadline)

        return self.retrier.run(attempt, self.deadline)

    def _upsert(self, report: Report, counter: list[int], deadline: float) -> WriteResult:
        counter[0] += 1
        try:
            response = self._call("POST", "reports/upsert", deadline,
                                  params={"idType": "external", "mode": "OVERRIDE"},
                                  data=json.dumps(payload(report)))
        except PermanentDeliveryError as exc:
            if exc.status in (404, 405, 501):
                raise EndpointMissingError(str(exc)) from exc
            raise
        report_id, existed = parse_upsert(response)
        return WriteResult(report_id, existed, counter[0])

    def _lookup_then_write(self, report: Report, counter: list[int], deadline: float) -> WriteResult:
        existing = self.lookup(report.external_id, counter, deadline)
        body = json.dumps(payload(report))
        counter[0] += 1
        if existing is None:
            response = self._call("POST", "reports", deadline, data=body)
            return WriteResult(response.text.strip().strip('"') or None, False, counter[0])
        self._call("PUT", f"reports/{quote(report.external_id, safe='')}", deadline,
                   params={"idType": "external"}, data=body)
        return WriteResult(existing.get("id"), True, counter[0])

    def lookup(self, external_id: str, counter: Optional[list[int]] = None,
               deadline: Optional[float] = None) -> Optional[dict[str, Any]]:
        """The report with this external id, or None when Station answers 404."""
        if counter is not None:
            counter[0] += 1
        try:
            found: dict[str, Any] = self._call("GET", f"reports/{quote(external_id, safe='')}", deadline,
                                               params={"idType": "external"}).json()
        except PermanentDeliveryError as exc:
            if exc.status == 404:
                return None
            raise
        return found


def open_writers(
    settings: Settings,
    pacer: Optional[Pacer] = None,
    *,
    sleep: Optional[Callable[[float], None]] = None,
) -> Callable[[], StationClient]:
    """A factory of per-thread Station clients sharing one pacer, one token and one upsert switch.

    ``pacer`` is the run's (a new one at ``settings.max_rate`` when None); ``sleep`` is used for
    back-off (default ``time.sleep``; the CLI passes an interruptible one).
    """
    pacer = pacer or Pacer(settings.max_rate)
    upsert = UpsertSupport()
    backoff = backoff_from_env()
    tokens = TokenSource(pacer)
    lock = threading.Lock()

    def make() -> StationClient:
        with lock:  # SDK construction touches module-level logging state
            return StationClient(settings, pacer, upsert, backoff, sleep or time.sleep, tokens)

    return make


if TYPE_CHECKING:  # the type checker proves this module is a ``writer.Backend``
    from gdtrustar import station as _this

    _BACKEND: Backend = _this
