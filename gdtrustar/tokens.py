"""OAuth tokens for a run: one token shared by every worker, fetched paced, refreshed a bounded number of times.

The SDK fetches a token per client (we have one client per thread) and, with ``retry=True``,
refreshes a refused token and repeats the call forever, unpaced (docs/decisions.md#oauth-token). Here the SDK runs
with ``retry=False`` and a refused token is only dropped (``SharedTokenApiClient``); the Station
client then asks the run's ``TokenSource``, which fetches a new token (taking a pacer slot like any
call) only if nobody has already replaced the refused one. Each call allows ``MAX_REFRESHES``.
"""

from __future__ import annotations

import threading
from typing import Optional

import requests

from gdtrustar.errors import ConfigError
from gdtrustar.logs import register_secret
from gdtrustar.pacing import Pacer
from gdtrustar.sdk import ApiClient

TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
MAX_REFRESHES = 2  # token refreshes per call before Station's refusals are an error


class SharedTokenApiClient(ApiClient):  # type: ignore[misc]  # subclassing Any: the SDK ships no types
    """The SDK's client, except that a refused token is only dropped: ``StationClient`` gets the next."""

    refused: Optional[str] = None
    token: Optional[str]  # the SDK's own attribute, set in its __init__

    def _refresh_token(self) -> None:
        self.refused, self.token = self.token, None


class TokenSource:
    """One OAuth token for every worker of a run: fetched (paced) only when none is held or it was refused."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self._token: Optional[str] = None
        self._lock = threading.Lock()

    def get(self, client: ApiClient, refused: Optional[str], deadline: Optional[float]) -> str:
        """The current token, or a new one if ``refused`` is the current one (or there is none)."""
        with self._lock:
            if self._token is None or self._token == refused:
                self.pacer.acquire(deadline)
                self._token = _fetch_token(client)
            return self._token


def _fetch_token(client: ApiClient) -> str:
    """The SDK's token request, with a timeout; the token is registered for redaction at once."""
    response = requests.post(
        client.auth,
        auth=requests.auth.HTTPBasicAuth(client.api_key, client.api_secret),
        data={"grant_type": "client_credentials"},
        verify=client.verify,
        proxies=client.proxies,
        timeout=TIMEOUT,
    )
    client.last_response = response
    if response.status_code >= 400:
        kind = "Client" if response.status_code < 500 else "Server"
        raise requests.HTTPError(f"{response.status_code} {kind} Error: unable to get token", response=response)
    body = response.json()
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:  # e.g. TRUSTAR_AUTH_ENDPOINT names some other JSON service
        raise ConfigError(f"the token endpoint {client.auth} answered {response.status_code} with no access_token: "
                          "check TRUSTAR_AUTH_ENDPOINT")
    register_secret(token)
    return token
