"""The TruSTAR side: one SDK client per worker thread, keyed upserts, a retry classifier.

Writes go through the documented ``POST /reports/upsert?idType=external&mode=OVERRIDE``
(docs/decisions.md#upsert) using the SDK's own request machinery, so OAuth refresh still applies.
Because the write is keyed by ``externalTrackingId`` it is safe to repeat after a lost response. A
Station without that endpoint is detected once (404/405) and the whole run falls back to
look-up-then-submit/update, which looks up again before every retry, so a lost response never
becomes a second report.

The SDK (docs/decisions.md#sdk-threads and #rate-limit) is not thread-safe, has no timeout except on
submit, sleeps inside ``request`` on 429 and crashes on a 429 without ``waitTime``. We therefore
build it with ``max_wait_time=0`` (a 429 with a wait surfaces as an ``HTTPError`` we classify) and
pass a timeout on every call ourselves; the token call gets one through ``_TimedApiClient``.
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
    EndpointMissingError,
    PermanentDeliveryError,
    RetriableError,
)
from gdtrustar.logs import register_secret
from gdtrustar.mapper import Report
from gdtrustar.pacing import Backoff, TokenBucket
from gdtrustar.sdk import ApiClient, TruStar
from gdtrustar.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
MAX_SERVER_WAIT = 300.0  # longest 429 waitTime (seconds) we sit out before failing the finding


class _TimedApiClient(ApiClient):
    """The SDK's client with a timeout on the token call, and the token registered for redaction."""

    timeout = TIMEOUT

    def _refresh_token(self) -> None:
        response = requests.post(
            self.auth,
            auth=requests.auth.HTTPBasicAuth(self.api_key, self.api_secret),
            data={"grant_type": "client_credentials"},
            verify=self.verify,
            proxies=self.proxies,
            timeout=self.timeout,
        )
        self.last_response = response
        if response.status_code >= 400:
            kind = "Client" if response.status_code < 500 else "Server"
            raise requests.HTTPError(f"{response.status_code} {kind} Error: unable to get token", response=response)
        self.token = response.json()["access_token"]
        register_secret(self.token)


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
        "retry": True,  # keeps the SDK's refresh-and-repeat on an expired token
        "max_wait_time": 0,  # ... but never its own sleeping on 429: we pace and wait ourselves
        "verify": True,
    })
    # Swapping the class only adds the token-call timeout; every other method is the SDK's own.
    ts._client.__class__ = _TimedApiClient
    return ts


def classify(exc: BaseException, sdk: TruStar) -> Exception:
    """Turn whatever the SDK or requests raised into one of our error types."""
    if isinstance(exc, requests.exceptions.SSLError):  # not transient: never retried, never ignored
        reason = "certificate verification failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "TLS error"
        return ConfigError(f"TLS connection to Station refused: {reason} ({_host(exc)}); "
                           "gdtrustar always verifies certificates (set REQUESTS_CA_BUNDLE for a private CA)")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return RetriableError(f"connection to Station failed: {type(exc).__name__}")
    response = getattr(exc, "response", None)
    if response is None:
        response = sdk._client.last_response
    status = getattr(response, "status_code", None)
    if status is None:
        return RetriableError(f"Station call failed: {exc}")
    message = _message(response)
    if status == 501:  # "Not Implemented": an endpoint this Station lacks, not a passing fault
        return PermanentDeliveryError(f"501 from Station: {message}", status=501)
    if status == 429:
        return RetriableError(f"429 rate limited: {message}", wait=_wait_seconds(response))
    if status >= 500:
        return RetriableError(f"{status} from Station: {message}")
    if status in (401, 403) and "token" in str(exc):
        return ConfigError(f"TruSTAR rejected the API key/secret ({status}): check TRUSTAR_API_KEY/TRUSTAR_API_SECRET")
    return PermanentDeliveryError(f"{status} from Station: {message}", status=status)


def _host(exc: Exception) -> str:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None) or ""
    return url.split("/")[2] if url.count("/") >= 2 else "unknown host"


def _message(response: Any) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("message") or body.get("error_description") or body.get("error") or body)[:300]
    except ValueError:
        pass
    return (response.text or "").strip()[:300] or "no message"


def _wait_seconds(response: Any) -> float:
    """Server's pause: JSON ``waitTime`` in ms (docs/decisions.md#rate-limit), else Retry-After seconds, else 1 s."""
    try:
        wait_ms = response.json().get("waitTime")
        if wait_ms is not None:
            return max(float(wait_ms) / 1000.0, 0.0)
    except (ValueError, AttributeError):
        pass
    try:
        return float(response.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return 1.0


class StationClient:
    """One worker's view of Station: paced, retried, keyed writes."""

    def __init__(
        self,
        settings: Settings,
        bucket: TokenBucket,
        upsert: UpsertSupport,
        backoff: Backoff,
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.sdk = make_sdk(settings)
        self.bucket = bucket
        self.upsert_support = upsert
        self.backoff = backoff
        self.sleep = sleep

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One paced SDK call; raises our error types."""
        self.bucket.acquire()
        try:
            response = self.sdk._client.request(method, path, timeout=TIMEOUT, **kwargs)
        except Exception as exc:  # the SDK raises HTTPError, TypeError (429 w/o waitTime), requests errors
            error = classify(exc, self.sdk)
            if isinstance(error, RetriableError) and error.wait is not None:
                self.bucket.pause(error.wait)
            raise error from exc
        self.bucket.succeeded()
        return response

    def check_enclaves(self, enclave_ids: tuple[str, ...]) -> None:
        """Fail early (exit 2) unless the credentials can create reports in every enclave."""
        response = self.with_retries(lambda: self._call("GET", "enclaves"))
        by_id = {str(e.get("id") or e.get("guid")): e for e in response.json()}
        for enclave_id in enclave_ids:
            enclave = by_id.get(enclave_id)
            if enclave is None:
                raise ConfigError(f"enclave {enclave_id} is not visible to this API key")
            if not enclave.get("create"):
                raise ConfigError(f"this API key cannot create reports in enclave {enclave_id}")

    def with_retries(self, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` until it succeeds, fails permanently, or retries run out."""
        tries = 0
        while True:
            tries += 1
            try:
                return attempt()
            except RetriableError as exc:
                # 429s are the server pacing us, not failures: they get twice the attempts. A wait of
                # many minutes means a spent quota: fail now (failures file) rather than hang for hours.
                limit = self.backoff.attempts * (2 if exc.wait is not None else 1)
                if tries >= limit or (exc.wait or 0) > MAX_SERVER_WAIT:
                    raise
                delay = self.backoff.delay(tries, exc.wait)
                log.info("retry %d after %.2fs: %s", tries, delay, exc)
                if delay > 0:
                    self.sleep(delay)

    def write(self, report: Report) -> WriteResult:
        """Create or replace the report keyed by its external id; exactly one report per key."""
        counter = [0]

        def attempt() -> WriteResult:
            if self.upsert_support.available:
                try:
                    return self._upsert(report, counter)
                except EndpointMissingError:
                    self.upsert_support.disable()
            return self._lookup_then_write(report, counter)

        return self.with_retries(attempt)

    def _upsert(self, report: Report, counter: list) -> WriteResult:
        counter[0] += 1
        try:
            response = self._call("POST", "reports/upsert", params={"idType": "external", "mode": "OVERRIDE"},
                                  data=json.dumps(report.payload()))
        except PermanentDeliveryError as exc:
            if exc.status in (404, 405, 501):
                raise EndpointMissingError(str(exc)) from exc
            raise
        report_id, existed = _parse_upsert(response)
        return WriteResult(report_id, existed, counter[0])

    def _lookup_then_write(self, report: Report, counter: list) -> WriteResult:
        existing = self.lookup(report.external_id, counter)
        body = json.dumps(report.payload())
        counter[0] += 1
        if existing is None:
            response = self._call("POST", "reports", data=body)
            return WriteResult(response.text.strip().strip('"') or None, False, counter[0])
        self._call("PUT", f"reports/{quote(report.external_id, safe='')}", params={"idType": "external"}, data=body)
        return WriteResult(existing.get("id"), True, counter[0])

    def lookup(self, external_id: str, counter: Optional[list] = None) -> Optional[dict]:
        """The report with this external id, or None when Station answers 404."""
        if counter is not None:
            counter[0] += 1
        try:
            return self._call("GET", f"reports/{quote(external_id, safe='')}", params={"idType": "external"}).json()
        except PermanentDeliveryError as exc:
            if exc.status == 404:
                return None
            raise


def _parse_upsert(response: requests.Response) -> tuple[Optional[str], Optional[bool]]:
    """Report id and whether it existed; the upsert response format is unconfirmed (docs/decisions.md#upsert)."""
    existed = {201: False}.get(response.status_code)
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip().strip('"') or None), existed
    if isinstance(body, dict):
        report_id = body.get("id") or body.get("guid")
        if existed is None and body.get("created") is not None and body.get("updated") is not None:
            existed = body["created"] != body["updated"]
        return report_id, existed
    return (str(body) if body else None), existed


def backoff_from_env() -> Backoff:
    """Retry tuning knobs (documented in README) for slow links or fast tests."""
    return Backoff(
        base=float(os.environ.get("GDTRUSTAR_BACKOFF_BASE", "0.5")),
        cap=float(os.environ.get("GDTRUSTAR_BACKOFF_CAP", "20")),
        attempts=int(os.environ.get("GDTRUSTAR_RETRY_ATTEMPTS", "6")),
    )


def station_factory(settings: Settings, bucket: Optional[TokenBucket] = None) -> Callable[[], StationClient]:
    """A factory of per-thread Station clients sharing one pacer and one upsert switch."""
    bucket = bucket or TokenBucket(settings.max_rate)
    upsert = UpsertSupport()
    backoff = backoff_from_env()
    lock = threading.Lock()

    def make() -> StationClient:
        with lock:  # SDK construction touches module-level logging state
            return StationClient(settings, bucket, upsert, backoff, time.sleep)

    return make
