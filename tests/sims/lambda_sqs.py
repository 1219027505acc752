"""Lambda's SQS event source mapping, emulated for tests and benchmarks: poll, invoke, delete.

One *copy* is one process (fresh imports and its own warm state, like one Lambda execution
environment) that long-polls a real SQS queue (moto in server mode), hands the function up to
10 messages as the SQS-shaped event Lambda builds (``Records[].{messageId, receiptHandle, body,
attributes, md5OfBody, eventSource, eventSourceARN, awsRegion}``), and then does what the event
source mapping does with the answer: deletes every message not named in ``batchItemFailures``,
and deletes none if the function raised. Failed messages are made visible again at once
(``ChangeMessageVisibility 0``) instead of after the visibility timeout, to fast-forward time;
SQS itself counts the receives and moves a message to the dead-letter queue after
``maxReceiveCount``. A copy exits when the queue holds nothing, visible or in flight, or at
``stop_after`` seconds.

CLI: ``python -m tests.sims.lambda_sqs SPEC.json`` where the spec holds ``env`` (the function's
environment), ``endpoint``, ``region``, ``queue_url``, ``timeout`` (the function timeout, s),
``stop_after`` and ``result`` (a path: the copy writes its statistics there as JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional


class FakeContext:
    """The part of Lambda's context object the handler reads: remaining time to its timeout."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self._clock = clock
        self.deadline = clock() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - self._clock()) * 1000))


def sqs_event(messages: list, queue_arn: str, region: str) -> dict:
    """The event Lambda's SQS poller builds from ``ReceiveMessage`` results."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {k: v for k, v in m.get("Attributes", {}).items()
                       if k in ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                "ApproximateFirstReceiveTimestamp")},
        "messageAttributes": m.get("MessageAttributes", {}), "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region,
    } for m in messages]}


def receive(sqs: Any, queue_url: str, wait: int = 1) -> list:
    """Up to 10 messages, with the attributes Lambda passes on."""
    return sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                               AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])


def settle(sqs: Any, queue_url: str, messages: list, result: Optional[dict], raised: bool) -> tuple[int, int]:
    """Do what the event source mapping does with the function's answer; (deleted, returned)."""
    failed = {m["MessageId"] for m in messages} if raised else {
        f["itemIdentifier"] for f in ((result or {}).get("batchItemFailures") or [])}
    done = [m for m in messages if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
    back = [m for m in messages if m["MessageId"] in failed]
    if back:
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(back)])
    return len(done), len(back)


def in_queue(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def run_copy(spec: dict) -> dict:
    """One copy's life: poll and invoke until the queue is empty; returns its statistics.

    As Lambda's pollers do, the next batch is received while the function runs, and the last one is
    settled (deleted, or made visible again) beside the next invocation: the function's own time
    is spent on the function.
    """
    os.environ.update(spec["env"])
    import boto3

    from gdtrustar import lambda_handler

    def client():
        return boto3.client("sqs", endpoint_url=spec["endpoint"], region_name=spec["region"])

    url, fetch, tidy = spec["queue_url"], client(), client()
    queue_arn = fetch.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stats = {"invocations": 0, "messages": 0, "deleted": 0, "returned": 0, "raised": [], "late": 0}
    stop = time.monotonic() + float(spec.get("stop_after", 300))
    with ThreadPoolExecutor(max_workers=2) as pool:
        upcoming, settling = pool.submit(receive, fetch, url), None
        while time.monotonic() < stop:
            messages = upcoming.result()
            if not messages:
                _count(stats, settling)
                settling = None
                if in_queue(fetch, url) == 0:
                    break
                upcoming = pool.submit(receive, fetch, url)
                continue
            upcoming = pool.submit(receive, fetch, url)
            context = FakeContext(float(spec.get("timeout", 120)))
            result, raised = None, False
            try:
                result = lambda_handler.handler(sqs_event(messages, queue_arn, spec["region"]), context)
            except Exception as exc:  # what Lambda would record as a function error
                stats["raised"].append(f"{type(exc).__name__}: {exc}")
                raised = True
            stats["late"] += context.get_remaining_time_in_millis() == 0  # ran into the Lambda timeout
            stats["invocations"] += 1
            stats["messages"] += len(messages)
            _count(stats, settling)
            settling = pool.submit(settle, tidy, url, messages, result, raised)
        _count(stats, settling)
        upcoming.cancel()
    return stats


def _count(stats: dict, settling: Optional[Future]) -> None:
    if settling is not None:
        deleted, returned = settling.result()
        stats["deleted"] += deleted
        stats["returned"] += returned


def run_copies(specs: list, workdir: Path, env: dict, timeout: float = 600) -> list:
    """Run one process per spec at once (the function's concurrent copies); their stats, with stderr."""
    root = Path(__file__).resolve().parents[2]
    procs = []
    for i, spec in enumerate(specs):
        spec = dict(spec, result=str(workdir / f"copy{i}.json"))
        path = workdir / f"copy{i}.spec.json"
        path.write_text(json.dumps(spec))
        err = open(workdir / f"copy{i}.stderr", "wb")
        procs.append((subprocess.Popen([sys.executable, "-m", "tests.sims.lambda_sqs", str(path)], cwd=root,
                                       env=env, stdout=subprocess.DEVNULL, stderr=err), err, spec))
    out = []
    for proc, err, spec in procs:
        proc.wait(timeout=timeout)
        err.close()
        stats = json.loads(Path(spec["result"]).read_text()) if proc.returncode == 0 else {"exit": proc.returncode}
        stats["stderr"] = Path(err.name).read_text(errors="replace")
        out.append(stats)
    return out


def main(argv: Optional[list] = None) -> int:
    spec = json.loads(open((argv or sys.argv[1:])[0]).read())
    stats = run_copy(spec)
    with open(spec["result"], "w") as fh:
        json.dump(stats, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
