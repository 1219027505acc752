"""One SQS batch from the buffer queue: parse, de-duplicate, deliver before the deadline, report.

The Lambda's event source mapping hands the function up to 10 messages whose bodies are the
EventBridge events the rule sent (or, after ``gdtrustar redrive`` of a stack's old dead-letter
queue, Lambda on-failure records wrapping them). The function answers with a partial batch
response: the ids of the messages that must come back. SQS deletes the rest
(docs/decisions.md#sqs-event-source; the on-failure records: docs/decisions.md#lambda-async).

Rules, in the order they apply:

* A body that is not JSON, not a GuardDuty finding, or a finding the mapper cannot render is one
  log line and a batch item failure *every* time: after ``maxReceiveCount`` receives SQS moves it
  to the dead-letter queue. Nothing is deleted silently.
* Two messages for the same finding cost one Station call: the latest ``updatedAt`` is delivered
  (the later message on a tie) and every message of that finding shares its outcome.
* The deadline is the invocation's remaining time less ``SAFETY_SECONDS``. No finding is started
  after it, and the Station client's waits end before it (``StationClient.deadline``). What was
  not delivered in time, or got a 429 it could not wait out, goes back as a failure.
* Nothing here raises for a partial failure: a raise would fail, and redeliver, the whole batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

from gdtrustar.actions import Action
from gdtrustar.items import Item, items_from
from gdtrustar.outcomes import Outcome
from gdtrustar.sources import Document

log = logging.getLogger(__name__)
SAFETY_SECONDS = 10.0  # time kept to return the response after the last write
DELIVERED = frozenset((Action.CREATED, Action.UPDATED, Action.UNCHANGED))

#: ``deliver(items, deadline)`` → outcomes: the Lambda's shared delivery path (one Station client).
Deliver = Callable[[Iterable[Item], Optional[float]], list[Outcome]]


@dataclass
class Message:
    """One SQS record: its id and the items its body holds (an invalid item says why)."""

    message_id: str
    items: list[Item] = field(default_factory=list)


def is_sqs_batch(event: Any) -> bool:
    """An event source mapping's event: ``Records`` from ``aws:sqs``."""
    records = event.get("Records") if isinstance(event, dict) else None
    return isinstance(records, list) and bool(records) and all(
        isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def parse(record: dict) -> Message:
    """The items in one record's body; a body that holds no finding becomes one invalid item."""
    message_id = str(record.get("messageId") or "")
    origin = f"sqs message {message_id}"
    try:
        body = json.loads(record.get("body") or "")
    except (ValueError, RecursionError, TypeError) as exc:
        return Message(message_id, [Item(origin, error=f"body is not JSON: {str(exc)[:120]}")])
    items = list(items_from([Document(origin, _unwrap(body))]))
    return Message(message_id, items or [Item(origin, error="body holds no GuardDuty finding")])


def _unwrap(body: Any) -> Any:
    """A Lambda on-failure destination record (an old stack's dead-letter queue) → its event."""
    if isinstance(body, dict) and isinstance(body.get("requestContext"), dict) and "requestPayload" in body:
        return body["requestPayload"]
    return body


def deadline_from(context: Any, clock: Callable[[], float]) -> Optional[float]:
    """Absolute ``clock()`` time by which the last write must have ended; None without a context."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return clock() + float(remaining()) / 1000.0 - SAFETY_SECONDS


def _latest(messages: list[Message]) -> dict[str, tuple[Item, list[str]]]:
    """Map finding id → (item to deliver, ids of every message holding that finding)."""
    chosen: dict[str, tuple[Item, list[str]]] = {}
    for message in messages:
        for item in message.items:
            if item.finding is None:
                continue
            finding_id = item.finding["id"]
            best, ids = chosen.get(finding_id, (item, []))
            if _updated_at(item) >= _updated_at(best):
                best = item
            chosen[finding_id] = (best, ids + [message.message_id])
    return chosen


def _updated_at(item: Item) -> str:
    return str(item.finding.get("updatedAt", "")) if item.finding is not None else ""


def _until(items: Iterable[Item], deadline: Optional[float], clock: Callable[[], float]) -> Iterator[Item]:
    for item in items:
        if deadline is not None and clock() >= deadline:
            return  # the rest is reported back, not started
        yield item


def handle_batch(event: dict, context: Any, deliver: Deliver,
                 clock: Callable[[], float] = time.monotonic) -> dict:
    """Deliver one SQS batch; return the partial batch response."""
    deadline = deadline_from(context, clock)
    messages = [parse(record) for record in event["Records"]]
    if any(not m.message_id for m in messages):  # cannot be reported item by item: retry it all
        raise ValueError("an SQS record without a messageId")
    failed: set[str] = set()
    for message in messages:
        for item in message.items:
            if item.finding is None:
                _log(message.message_id, Action.INVALID, item.error)
                failed.add(message.message_id)
    chosen = _latest(messages)
    outcomes = deliver(_until((item for item, _ in chosen.values()), deadline, clock), deadline)
    by_finding: dict[Optional[str], list[Outcome]] = {}
    for outcome in outcomes:
        by_finding.setdefault(outcome.finding_id, []).append(outcome)
    for finding_id, (_, ids) in chosen.items():
        results = by_finding.get(finding_id) or [Outcome(Action.FAILED, "", finding_id, error="not started: deadline")]
        for outcome in results:
            if outcome.action not in DELIVERED:
                failed.update(ids)
                where = f" in {outcome.enclave_id}" if outcome.enclave_id else ""
                for message_id in sorted(set(ids)):
                    _log(message_id, outcome.action, f"finding {finding_id}{where}: {outcome.error}")
    return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in messages if m.message_id in failed]}


def _log(message_id: str, action: str, reason: Optional[str]) -> None:
    """One line per message and receive; what cannot succeed on a retry says where it will end."""
    where = "back to the queue" if action == Action.FAILED else "left for the dead-letter queue"
    text = f"sqs message {message_id}: {where}: {reason}"
    # a lone surrogate from the input must not break the log handler's UTF-8 encoding
    log.log(logging.WARNING if action == Action.FAILED else logging.ERROR,
            text.encode("utf-8", "backslashreplace").decode("utf-8"))
