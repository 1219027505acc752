"""``backfill --via-queue``: put findings in the deployed stack's buffer queue instead of Station.

The laptop only reads GuardDuty and writes SQS (``SendMessageBatch``, 10 a call), so 100,000
findings are queued in minutes; the stack's function then delivers them at the stack's budget,
with retries and the dead-letter queue, whether or not the laptop stays on. Each body is the
event EventBridge would have sent for the finding (its envelope, ``detail`` = the camelCase
finding), so the function cannot tell a backfilled finding from a live one.

A finding is queued at most once per run (the latest ``updatedAt`` if GuardDuty lists it twice);
there is no ledger: the laptop never learns what Station accepted. A body over the queue's
``MaximumMessageSize`` (docs/decisions.md#sqs-message-size: 256 KiB or 1 MiB) cannot be
queued: that is one line, and the finding goes to the failures file for a direct ``gdtrustar
send``. So do entries SQS keeps refusing after ``ENTRY_ATTEMPTS`` tries.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Callable

from gdtrustar.actions import ENGINE_ACTIONS, Action
from gdtrustar.deployed import aws_errors, drain_time, queue_depth
from gdtrustar.errors import ConfigError
from gdtrustar.failures import FailuresFile, choose_path
from gdtrustar.findings import is_sample
from gdtrustar.items import Item
from gdtrustar.ledger import default_path
from gdtrustar.outcomes import Outcome, Summary
from gdtrustar.output import Reporter
from gdtrustar.status import ExitStatus

if TYPE_CHECKING:
    from boto3 import Session
    from mypy_boto3_sqs import SQSClient

    from gdtrustar.app import RunOptions
    from gdtrustar.deployed import DeployedStack
    from gdtrustar.guardduty import Criteria, Target

BATCH = 10  # SendMessageBatch's maximum entries
ENTRY_ATTEMPTS = 4  # SQS-side (not sender) entry failures are retried this often
_NAMESPACE = uuid.UUID("5d1f6f0e-7b1c-4c55-9a57-6a1b1d2f9e11")

Sink = Callable[[Outcome], None]


def envelope(finding: dict) -> dict:
    """The EventBridge event GuardDuty publishes for ``finding``; its id is stable per version."""
    updated = str(finding.get("updatedAt") or "")
    return {
        "version": "0",
        "id": str(uuid.uuid5(_NAMESPACE, f"{finding['id']}|{updated}")),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": finding.get("accountId", ""),
        "time": (updated[:19] + "Z") if updated else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": finding.get("region", ""),
        "resources": [],
        "detail": finding,
    }


class QueueSender:
    """Packs findings into ``SendMessageBatch`` calls and reports one outcome per finding."""

    def __init__(self, sqs: SQSClient, queue_url: str, sink: Sink, max_bytes: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.sqs, self.queue_url, self.sink = sqs, queue_url, sink
        self.max_bytes = max_bytes
        self.sleep = sleep
        self._batch: list[tuple[Item, str]] = []
        self._seen: dict[str, str] = {}  # finding id -> updatedAt queued in this run

    def submit(self, item: Item) -> None:
        """Queue one item (invalid items and repeats become outcomes at once)."""
        if item.finding is None:  # not a finding by design (skipped), or one that cannot be read (invalid)
            action = Action.SKIPPED if item.skipped else Action.INVALID
            return self.sink(Outcome(action, item.origin, error=item.error, document=item.document))
        finding_id, updated = item.finding["id"], item.finding.get("updatedAt", "")
        if finding_id in self._seen and self._seen[finding_id] >= updated:
            return self.sink(Outcome(Action.SKIPPED, item.origin, finding_id, error="already queued in this run"))
        self._seen[finding_id] = updated
        body = json.dumps(envelope(item.finding), ensure_ascii=False, separators=(",", ":"))
        size = len(body.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            return self._fail([((item, body), f"message of {size} bytes is over the queue's limit of "
                                              f"{self.max_bytes} bytes; send it directly with gdtrustar send")])
        if len(self._batch) >= BATCH or self._bytes() + size > self.max_bytes:
            self.flush()
        self._batch.append((item, body))

    def flush(self) -> None:
        """Send what is packed, retrying SQS-side entry failures."""
        pending, self._batch = self._batch, []
        for attempt in range(1, ENTRY_ATTEMPTS + 1):
            if not pending:
                return
            pending, refused = self._send(pending)
            self._fail(refused)
            if pending and attempt < ENTRY_ATTEMPTS:
                self.sleep(min(5.0, 0.2 * 2 ** attempt))
        self._fail([(entry, f"SQS did not accept the message after {ENTRY_ATTEMPTS} attempts") for entry in pending])

    def _bytes(self) -> int:
        return sum(len(body.encode("utf-8", "surrogatepass")) for _, body in self._batch)

    def _send(self, entries: list) -> tuple[list, list]:
        """One call: (entries to retry, (entry, reason) refused for good); queued ones are reported."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "MessageBody": body} for i, (_, body) in enumerate(entries)])
        except (ClientError, BotoCoreError) as exc:  # access, KMS or network: stop, listing this batch
            self._fail([(entry, f"SendMessageBatch failed: {exc}") for entry in entries])
            raise ConfigError(f"cannot send to {self.queue_url}: {exc}") from exc
        for ok in response.get("Successful", []):
            item, _ = entries[int(ok["Id"])]
            self.sink(Outcome(Action.QUEUED, item.origin, item.finding["id"], finding=item.finding))
        retry, refused = [], []
        for failure in response.get("Failed", []):
            entry = entries[int(failure["Id"])]
            if failure.get("SenderFault"):
                refused.append((entry, f"SQS refused the message: {failure.get('Code')}: {failure.get('Message')}"))
            else:
                retry.append(entry)
        return retry, refused

    def _fail(self, refused: list) -> None:
        """``refused``: ((item, body), reason) pairs; each becomes a failed outcome (failures file)."""
        for (item, _), reason in refused:
            self.sink(Outcome(Action.FAILED, item.origin, item.finding["id"], error=reason, finding=item.finding))


def max_message_bytes(sqs: SQSClient, queue_url: str) -> int:
    """The queue's own limit (SQS raised the maximum from 256 KiB to 1 MiB; a queue may hold either)."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MaximumMessageSize"])
    return int(attributes["Attributes"].get("MaximumMessageSize", 262144))


def backfill_via_queue(session: Session, targets: list[Target], criteria: Criteria, stack: DeployedStack,
                       options: RunOptions) -> ExitStatus:
    """Queue every matching finding of every target; print how long the queue takes to drain."""
    sqs = session.client("sqs", region_name=stack.region)
    url = stack.output("BufferQueueUrl")
    with aws_errors(f"buffer queue of {stack.name}"):
        limit = max_message_bytes(sqs, url)
    path, note = choose_path(options.failures, (options.state or default_path()).parent)  # before any send
    failures = FailuresFile(path, explicit=options.failures is not None, note=note)
    stop = threading.Event()  # Ctrl-C or a closed stdout: stop reading, send what is packed
    reporter = Reporter(json_mode=options.json, dry_run=False, verbosity=options.verbosity, on_closed=stop.set)
    summary = Summary(counts={Action.QUEUED: 0, **dict.fromkeys(ENGINE_ACTIONS, 0)})

    def sink(outcome: Outcome) -> None:
        summary.findings += 1
        summary.counts[outcome.action] += 1
        failures.add(outcome)  # first: whatever happens to the output, the finding is listed
        reporter(outcome)

    sender = QueueSender(sqs, url, sink, limit)
    try:
        _queue_all(sender, targets, criteria, reporter, stack.name, options.exclude_samples, stop)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        try:
            sender.flush()
        finally:
            summary.finished = time.monotonic()
            reporter.finish(summary, failures.close(), failures.note)
    with aws_errors(f"buffer queue of {stack.name}"):
        depth = queue_depth(sqs, url)
    reporter.line(f"the buffer queue of {stack.name} holds about {depth} findings; "
                  f"they drain in {drain_time(depth, stack)}, with or without this machine")
    if summary.interrupted or reporter.closed:
        return ExitStatus.INTERRUPTED if summary.interrupted else ExitStatus.OUTPUT_CLOSED
    return ExitStatus.UNDELIVERED if summary.problems else ExitStatus.SUCCESS


def _queue_all(sender: QueueSender, targets: list[Target], criteria: Criteria, reporter: Reporter, name: str,
               exclude_samples: bool, stop: threading.Event) -> None:
    """Read every target's pages (prefetched one ahead, as backfill does) into the sender."""
    from gdtrustar.backfill import _item as finding_item
    from gdtrustar.guardduty import count, known_total, pages, prefetch

    wire = [(t, criteria.finding_criteria()) for t in targets]
    reporter.set_total(known_total([count(t, c) for t, c in wire]), f"queueing to {name}")
    for target, wire_criteria in wire:
        reporter.describe(target.label)
        done = threading.Event()
        try:
            for page in prefetch(pages(target, wire_criteria), done):
                for raw in page:
                    if stop.is_set():
                        return
                    item = finding_item(target, raw)
                    if exclude_samples and item.finding is not None and is_sample(item.finding):
                        sender.sink(Outcome(Action.SKIPPED, item.origin, item.finding["id"],
                                            error="sample finding excluded by --exclude-samples"))
                    else:
                        sender.submit(item)
        finally:
            done.set()
