"""The EventBridge-triggered Lambda: a door of a few lines onto the same pipeline as the CLI.

Settings come from the environment (the same names as the CLI, old Lambda names included) and
the API key/secret from ``TRUSTAR_SECRET_ARN`` (Secrets Manager), cached while the container is
warm for ``TRUSTAR_SECRET_TTL`` seconds (default 300) and fetched again once if Station rejects
it. The enclave permission check runs once per warm container. Every event is one keyed upsert per
enclave, with no ledger: EventBridge redelivery is harmless because the write is idempotent.

A non-GuardDuty event or an undelivered finding raises, so Lambda's asynchronous retries and the
on-failure destination (the dead-letter queue) keep the event.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from gdtrustar.delivery import Engine, Outcome
from gdtrustar.errors import DeliveryError, InvalidFindingError
from gdtrustar.items import Item, items_from
from gdtrustar.logs import setup_logging
from gdtrustar.settings import Settings, fetch_secret, load_settings
from gdtrustar.sources import Document
from gdtrustar.station import station_factory

_runtime: Optional[_Runtime] = None


class _Runtime:
    """What a warm container keeps: settings with credentials, and one checked Station client."""

    def __init__(self) -> None:
        setup_logging(int(os.environ.get("GDTRUSTAR_VERBOSITY", "0")))
        self.base: Settings = load_settings()
        self.ttl = float(os.environ.get("TRUSTAR_SECRET_TTL", "300"))
        self.fetched_at = 0.0
        self.client: Any = None

    def station(self, force: bool = False) -> Any:
        """The Station client, rebuilt when the cached secret expired or ``force`` is set."""
        stale = self.base.secret_arn and time.monotonic() - self.fetched_at > self.ttl
        if self.client is None or stale or force:
            settings = self.base
            if settings.secret_arn:
                settings = settings.with_secret(*fetch_secret(settings.secret_arn))
                self.fetched_at = time.monotonic()
                if self.client is not None and settings == self.settings:
                    return self.client  # same secret: keep the checked client and its token
            settings.require_credentials()
            settings.require_enclaves()
            client = station_factory(settings)()
            client.check_enclaves(settings.enclave_ids)
            self.settings, self.client = settings, client
        return self.client


def _deliver(runtime: _Runtime, items: list[Item], force_secret: bool) -> list[Outcome]:
    client = runtime.station(force=force_secret)
    outcomes: list[Outcome] = []
    engine = Engine(enclave_ids=runtime.settings.enclave_ids, sink=outcomes.append,
                    client_factory=lambda: client, concurrency=1)
    engine.run(items)
    return outcomes


def handler(event: dict, context: Any = None) -> dict:
    """Deliver one EventBridge GuardDuty event; raise so Lambda retries what was not delivered."""
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    items = list(items_from([Document(f"event {event.get('id', '?') if isinstance(event, dict) else '?'}", event)]))
    invalid = [item for item in items if item.finding is None]
    if invalid or not items:
        raise InvalidFindingError(invalid[0].error if invalid else "event holds no GuardDuty finding")
    outcomes = _deliver(_runtime, items, force_secret=False)
    if any(o.action == "failed" for o in outcomes) and _runtime.base.secret_arn:
        outcomes = _deliver(_runtime, items, force_secret=True)  # the secret may have been rotated
    failed = [o for o in outcomes if o.action == "failed"]
    if failed:
        first = failed[0]
        raise DeliveryError(f"finding {first.finding_id} not delivered to {first.enclave_id}: {first.error}")
    first = outcomes[0]
    return {"finding_id": first.finding_id, "action": first.action, "report_id": first.report_id,
            "results": [o.record() for o in outcomes]}


def clear_cache() -> None:
    """Forget the warm state (settings, secret, client), as a cold start would."""
    global _runtime
    _runtime = None
