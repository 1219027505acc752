"""The Lambda: a door of a few lines onto the same pipeline as the CLI.

Two kinds of event arrive. The stack's event source mapping sends SQS batches from the buffer
queue (:mod:`gdtrustar.sqs_batch` answers with a partial batch response). A bare EventBridge
event comes from stacks made before the queue, and from tests: it is delivered, or the handler
raises so Lambda's retries and the on-failure destination keep it, including a finding the
mapper cannot render.

Settings come from the environment (the same names as the CLI, old Lambda names included) and
the API key/secret from ``TRUSTAR_SECRET_ARN`` (Secrets Manager), cached while the container is
warm for ``TRUSTAR_SECRET_TTL`` seconds (default 300) and fetched again when a delivery fails: a
changed secret gets the failed findings retried at once. The enclave permission check runs once
per warm container. Each copy paces itself at ``TRUSTAR_MAX_RATE`` divided by
``GDTRUSTAR_MAX_CONCURRENCY`` (the event source mapping's maximum concurrency), so the copies
together stay within the stack's budget. There is no ledger: every write is an idempotent keyed
upsert, so a redelivered message is harmless.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Iterable, Iterator, Optional

from gdtrustar import backends
from gdtrustar.actions import Action
from gdtrustar.delivery import Engine
from gdtrustar.errors import DeliveryError, InvalidFindingError, RetriableError
from gdtrustar.items import Item, items_from
from gdtrustar.logs import setup_logging
from gdtrustar.outcomes import Outcome
from gdtrustar.settings import Settings, fetch_secret, load_settings
from gdtrustar.sources import Document
from gdtrustar.sqs_batch import deadline_from, handle_batch, is_sqs_batch
from gdtrustar.writer import Writer

log = logging.getLogger(__name__)
_runtime: Optional[_Runtime] = None


class _Runtime:
    """What a warm container keeps: settings with credentials, and one checked writer of the chosen backend."""

    def __init__(self) -> None:
        setup_logging(int(os.environ.get("GDTRUSTAR_VERBOSITY", "0")))
        base = load_settings()
        copies = max(1, int(os.environ.get("GDTRUSTAR_MAX_CONCURRENCY", "1") or "1"))
        self.base: Settings = dataclasses.replace(base, max_rate=base.max_rate / copies)
        self.ttl = float(os.environ.get("TRUSTAR_SECRET_TTL", "300"))
        self.fetched_at = 0.0
        self.settings: Settings = self.base  # the base with the fetched secret, once there is a client
        self.render = backends.backend_for(self.base).payload
        self.client: Optional[Writer] = None

    def station(self, force: bool = False, deadline: Optional[float] = None) -> Writer:
        """The backend's writer, rebuilt when the cached secret expired or ``force`` is set.

        A new writer's enclave check waits for its paced slot like any call, so it keeps ``deadline``.
        """
        stale = self.base.secret_arn and time.monotonic() - self.fetched_at > self.ttl
        client = self.client
        if client is None or stale or force:
            settings = self.base
            if settings.secret_arn:
                settings = settings.with_secret(*fetch_secret(settings.secret_arn))
                self.fetched_at = time.monotonic()
                if client is not None and settings == self.settings:
                    return client  # same secret: keep the checked writer and its token
            settings.require_credentials()
            settings.require_enclaves()
            client = backends.open_writers(settings)()
            client.deadline = deadline
            client.check(settings.enclave_ids)
            self.settings, self.client = settings, client
        return client

    def deliver(self, items: Iterable[Item], deadline: Optional[float]) -> list[Outcome]:
        """Deliver through the shared engine; failures are retried once only if the secret changed."""
        seen: list[Item] = []
        try:
            client = self.station(deadline=deadline)
        except RetriableError as exc:  # Station unreachable, or no slot for the enclave check in time
            log.warning("nothing delivered in this invocation: %s", exc)
            return []
        outcomes = self._run(client, _tap(items, seen), deadline)
        failed = {o.finding_id for o in outcomes if o.action == Action.FAILED}
        if failed and self.base.secret_arn:
            before = self.client
            after = self.station(force=True, deadline=deadline)
            if after is not before:  # rotated: maybe auth failures
                retry = [i for i in seen if i.finding and i.finding["id"] in failed]
                again = {o.finding_id: o for o in self._run(after, retry, deadline)}
                outcomes = [again.get(o.finding_id, o) if o.finding_id in failed else o for o in outcomes]
        return outcomes

    def _run(self, client: Writer, items: Iterable[Item], deadline: Optional[float]) -> list[Outcome]:
        client.deadline = deadline  # no wait ends after it (pacing, 429, back-off)
        outcomes: list[Outcome] = []
        engine = Engine(enclave_ids=self.settings.enclave_ids, sink=outcomes.append, render=self.render,
                        writers=lambda: client, concurrency=1)
        engine.run(items)
        return outcomes


def _tap(items: Iterable[Item], seen: list) -> Iterator[Item]:
    """Pass items through lazily (the deadline is checked as the engine pulls) and keep them."""
    for item in items:
        seen.append(item)
        yield item


def _bare_event(runtime: _Runtime, event: Any, context: Any) -> dict:
    """One EventBridge event (old stacks): deliver it or raise, so Lambda retries or dead-letters it."""
    origin = f"event {event.get('id', '?') if isinstance(event, dict) else '?'}"
    items = list(items_from([Document(origin, event)]))
    invalid = [item for item in items if item.finding is None]
    if invalid or not items:
        raise InvalidFindingError(invalid[0].error if invalid else "event holds no GuardDuty finding")
    outcomes = runtime.deliver(items, deadline_from(context, time.monotonic))
    if not outcomes:  # Station could not be reached in time: Lambda retries the event
        raise DeliveryError(f"{origin}: not delivered: Station was not reachable within the invocation")
    for outcome in outcomes:
        if outcome.action == Action.INVALID:  # a finding the mapper cannot render: dead-letter it, never drop it
            raise InvalidFindingError(f"finding {outcome.finding_id}: {outcome.error}")
        if outcome.action == Action.FAILED:
            raise DeliveryError(f"finding {outcome.finding_id} not delivered to {outcome.enclave_id}: "
                                f"{outcome.error}")
    first = outcomes[0]
    return {"finding_id": first.finding_id, "action": first.action, "report_id": first.report_id,
            "results": [o.record() for o in outcomes]}


def handler(event: dict, context: Any = None) -> dict:
    """An SQS batch (partial batch response) or a bare EventBridge event (raises if undelivered)."""
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    if is_sqs_batch(event):
        return handle_batch(event, context, _runtime.deliver)
    return _bare_event(_runtime, event, context)


def clear_cache() -> None:
    """Forget the warm state (settings, secret, client), as a cold start would."""
    global _runtime
    _runtime = None
