"""``gdtrustar redrive``: SQS's own dead-letter queue redrive, started and watched.

See docs/decisions.md#sqs-redrive for what the API allows.

The stack's dead-letter queue is the redrive target of its buffer queue, so SQS can move its
messages back with ``StartMessageMoveTask`` (asynchronously, up to 500 messages/s, one task per
queue). This module only starts that task, with the buffer queue as the explicit destination (a
message that reached the dead-letter queue from EventBridge has no source queue of its own),
and follows ``ListMessageMoveTasks`` until the task ends. A move already running is followed,
not started again. Ctrl-C stops the watching, not the move.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

from gdtrustar.deployed import DeployedStack, drain_time, queue_depth
from gdtrustar.status import ExitStatus

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import ListMessageMoveTasksResultEntryTypeDef as MoveTask

Echo = Callable[[str], None]
ENDED = ("COMPLETED", "CANCELLED", "FAILED")


def _task(sqs: SQSClient, source_arn: str, handle: Optional[str]) -> Optional[MoveTask]:
    """Our task in the listing (newest first): by handle while it runs, else the newest."""
    results = sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=10).get("Results", [])
    for task in results:
        if handle and task.get("TaskHandle") == handle:
            return task
    return results[0] if results else None


def redrive(sqs: SQSClient, stack: DeployedStack, *, dry_run: bool, echo: Echo,
            sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 5.0) -> ExitStatus:
    """Move the dead-letter queue back into the buffer queue, showing progress until done."""
    dlq_arn, dlq_url = stack.output("DeadLetterQueueArn"), stack.output("DeadLetterQueueUrl")
    buffer_arn = stack.output("BufferQueueArn")
    waiting = queue_depth(sqs, dlq_url)
    running = _task(sqs, dlq_arn, None)
    running = running if running and running.get("Status") == "RUNNING" else None
    if dry_run:
        echo(f"dry run: would move about {waiting} messages from {dlq_arn} to {buffer_arn}"
             + (" (a move is already running)" if running else ""))
        return ExitStatus.SUCCESS
    if running:
        handle = running.get("TaskHandle")
        echo("a move from this dead-letter queue is already running; following it")
    elif waiting == 0:
        echo(f"nothing to redrive: {dlq_arn} is empty")
        return ExitStatus.SUCCESS
    else:
        handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=buffer_arn)["TaskHandle"]
        echo(f"moving about {waiting} messages from {dlq_arn} to {buffer_arn}")
    try:
        task = _follow(sqs, dlq_arn, handle, echo, sleep, poll_seconds)
    except KeyboardInterrupt:
        echo(f"the move goes on in SQS; cancel it with: aws sqs cancel-message-move-task --task-handle {handle}")
        raise
    return _report(task, stack, echo)


def _follow(sqs: SQSClient, dlq_arn: str, handle: Optional[str], echo: Echo,
            sleep: Callable[[float], None], poll_seconds: float) -> MoveTask:
    shown = None
    while True:
        task: MoveTask = _task(sqs, dlq_arn, handle) or {"Status": "FAILED",
                                                         "FailureReason": "the move task disappeared"}
        progress = (task.get("Status", "?"), task.get("ApproximateNumberOfMessagesMoved", 0))
        if progress != shown:
            total = task.get("ApproximateNumberOfMessagesToMove")
            echo(f"{progress[0].lower()}: moved {progress[1]}" + (f" of about {total}" if total is not None else ""))
            shown = progress
        if task.get("Status") in ENDED:
            return task
        sleep(poll_seconds)


def _report(task: MoveTask, stack: DeployedStack, echo: Echo) -> ExitStatus:
    moved = task.get("ApproximateNumberOfMessagesMoved", 0)
    if task.get("Status") == "COMPLETED":
        echo(f"done: {moved} messages are back in the buffer queue; they drain in {drain_time(moved, stack)}")
        return ExitStatus.SUCCESS
    reason = task.get("FailureReason") or "no reason given"
    echo(f"error: the move ended {task.get('Status', '?').lower()} after {moved} messages: {reason}; "
         "what was not moved is still in the dead-letter queue")
    return ExitStatus.UNDELIVERED
