"""The one place that chooses the backend: the API version the endpoint names picks the module.

``TRUSTAR_API_ENDPOINT`` ends in its API version (``https://api.trustar.co/api/1.3``). Each entry
of ``BACKENDS`` maps a version to a module that is a ``writer.Backend`` (``payload`` and
``open_writers``; each module proves it to the type checker itself). An endpoint that names no
version we have a backend for is spoken to as v1.3, as it always was. A module is imported only
when it is chosen: an SDK is slow to import.

A TruSTAR API 2.0 backend (``/2.0/submissions/events/upsert`` through the ``trustar2`` SDK;
docs/decisions.md#api-versions) is one new module with the same two functions, whose writers run
their calls through ``retrying.Retrier``, and one more line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional, cast

from gdtrustar.pacing import Pacer
from gdtrustar.settings import Settings
from gdtrustar.writer import Backend, Writer

BACKENDS: dict[str, str] = {
    "1.3": "gdtrustar.station",  # reports: POST /1.3/reports/upsert
}
DEFAULT_VERSION = "1.3"


def version_of(api_endpoint: str) -> str:
    """The API version the endpoint's last path segment names, if a backend speaks it; else v1.3."""
    last = api_endpoint.rstrip("/").rsplit("/", 1)[-1]
    return last if last in BACKENDS else DEFAULT_VERSION


def backend_for(settings: Settings) -> Backend:
    """The backend module for this run's API endpoint."""
    return cast(Backend, importlib.import_module(BACKENDS[version_of(settings.api_endpoint)]))


def open_writers(settings: Settings, pacer: Optional[Pacer] = None, *,
                 sleep: Optional[Callable[[float], None]] = None) -> Callable[[], Writer]:
    """A factory of per-thread writers for this run's backend (see ``writer.Backend.open_writers``)."""
    return backend_for(settings).open_writers(settings, pacer, sleep=sleep)
