"""What Station's answers mean: one classifier from whatever the SDK or requests raised to our errors.

The classes decide how the run recovers (see ``errors``): a TLS failure or a malformed URL is the
user's to fix (``ConfigError``, exit 2 at start), a dropped connection, timeout, DNS failure or 5xx
may pass (``RetriableError``), a 429 is flow control (``RetriableError`` with the server's ``wait``),
and any other 4xx will not change by repeating it (``PermanentDeliveryError``).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import requests

from gdtrustar.errors import ConfigError, GdTrustarError, PermanentDeliveryError, RetriableError

_MALFORMED = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
              requests.exceptions.InvalidSchema, requests.exceptions.URLRequired)


def classify(exc: BaseException, last_response: Any = None) -> Exception:
    """Turn an exception from a Station call into one of our error types."""
    if isinstance(exc, GdTrustarError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):  # not transient: never retried, never ignored
        reason = "certificate verification failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "TLS error"
        return ConfigError(f"TLS connection to Station refused: {reason} ({_host(exc)}); "
                           "gdtrustar always verifies certificates (set REQUESTS_CA_BUNDLE for a private CA)")
    if isinstance(exc, _MALFORMED):
        return ConfigError(f"malformed Station URL: {exc} (check TRUSTAR_API_ENDPOINT / TRUSTAR_AUTH_ENDPOINT)")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return RetriableError(f"connection to Station failed: {type(exc).__name__}")
    response = getattr(exc, "response", None)
    if response is None:
        response = last_response
    status = getattr(response, "status_code", None)
    if status is None:
        return RetriableError(f"Station call failed: {exc}")
    message = _message(response)
    if status == 501:  # "Not Implemented": an endpoint this Station lacks, not a passing fault
        return PermanentDeliveryError(f"501 from Station: {message}", status=501)
    if status == 429:
        return RetriableError(f"429 rate limited: {message}", wait=wait_seconds(response))
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


def wait_seconds(response: Any) -> float:
    """Server's pause: JSON ``waitTime`` in ms (docs/decisions.md#rate-limit), else Retry-After seconds, else 1 s."""
    try:
        wait_ms = response.json().get("waitTime")
        if wait_ms is not None and not math.isnan(float(wait_ms)):
            return max(float(wait_ms) / 1000.0, 0.0)
    except (ValueError, AttributeError, TypeError):
        pass
    try:
        seconds = float(response.headers.get("Retry-After"))
        return 1.0 if math.isnan(seconds) else max(seconds, 0.0)
    except (TypeError, ValueError):
        return 1.0


def parse_upsert(response: requests.Response) -> tuple[Optional[str], Optional[bool]]:
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
