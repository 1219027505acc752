"""`gdtrustar redrive`: the console script against a stack in moto, through the move-task proxy.

moto 5.x has no StartMessageMoveTask / ListMessageMoveTasks (checked in its SQS backend), so
``AWS_ENDPOINT_URL_SQS`` points at ``tests/sims/sqs_moves.py``: it serves those two operations,
moving messages between the moto queues one poll at a time, and forwards every other SQS call to
moto. The tests check the effect (the dead-letter queue's messages are back in the buffer queue,
bodies unchanged) and the call sequence (the CLI only starts and watches a task; it never
receives or sends a message itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from tests.moto_stack import client, create_stack, queue_messages
from tests.sims.guardduty import make_finding, to_eventbridge
from tests.sims.sqs_moves import SqsMoveProxy


def ours(res) -> str:
    """gdtrustar's own stderr lines (an in-process run also shows the moto server's access log)."""
    return "\n".join(line for line in res.stderr.splitlines() if line.startswith("gdtrustar:"))

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # moto: "not supported by CloudFormation"


@pytest.fixture
def proxy(moto_url):
    with SqsMoveProxy(moto_url, step=3) as server:
        yield server


@pytest.fixture
def redrive(cli, moto_url, proxy):
    cli.env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_ENDPOINT_URL_SQS": proxy.url})

    def run(*args: str):
        return cli("redrive", "--poll-seconds", "0", *args)
    return run


def _bodies(moto_url, name: str) -> list:
    return sorted(m["Body"] for m in queue_messages(moto_url, name))


def _fill_dlq(moto_url, name: str, n: int) -> list:
    sqs = client(moto_url, "sqs")
    url = sqs.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
    bodies = [json.dumps(to_eventbridge(make_finding(i))) for i in range(n)]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    return sorted(bodies)


def test_redrive_moves_the_dead_letter_queue_back_with_sqs_own_task(redrive, moto_url, proxy):
    outputs = create_stack(moto_url, "gdt-redrive")
    bodies = _fill_dlq(moto_url, "gdt-redrive", 7)
    res = redrive("--function-name", "gdt-redrive")
    assert res.code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert f"gdtrustar: moving about 7 messages from {outputs['DeadLetterQueueArn']} to " \
           f"{outputs['BufferQueueArn']}" in lines
    progress = [line for line in lines if ": moved " in line]
    assert progress == ["gdtrustar: running: moved 3 of about 7", "gdtrustar: running: moved 6 of about 7",
                        "gdtrustar: completed: moved 7 of about 7"]
    assert "gdtrustar: done: 7 messages are back in the buffer queue; they drain in under a minute at the " \
           "stack's budget of 60 calls/min" in lines
    assert _bodies(moto_url, "gdt-redrive-buffer") == bodies
    assert _bodies(moto_url, "gdt-redrive-dlq") == []
    # SQS did the moving: the CLI only counted, started one task and watched it
    assert set(proxy.operations) == {"GetQueueAttributes", "ListMessageMoveTasks", "StartMessageMoveTask"}
    assert proxy.operations.count("StartMessageMoveTask") == 1
    (task,) = proxy.tasks
    assert (task.source_arn, task.destination_arn) == (outputs["DeadLetterQueueArn"], outputs["BufferQueueArn"])


def test_dry_run_counts_only(redrive, moto_url, proxy):
    outputs = create_stack(moto_url, "gdt-redrive-dry")
    bodies = _fill_dlq(moto_url, "gdt-redrive-dry", 4)
    res = redrive("--function-name", "gdt-redrive-dry", "--dry-run")
    assert res.code == 0, res.stderr
    assert ours(res) == (f"gdtrustar: dry run: would move about 4 messages from "
                                  f"{outputs['DeadLetterQueueArn']} to {outputs['BufferQueueArn']}")
    assert "StartMessageMoveTask" not in proxy.operations
    assert _bodies(moto_url, "gdt-redrive-dry-dlq") == bodies


def test_an_empty_dead_letter_queue_is_nothing_to_do(redrive, moto_url, proxy):
    create_stack(moto_url, "gdt-redrive-empty")
    res = redrive("--function-name", "gdt-redrive-empty")
    assert res.code == 0 and "nothing to redrive" in res.stderr, res.stderr
    assert "StartMessageMoveTask" not in proxy.operations


def test_a_failed_move_is_exit_1_with_the_reason_and_the_rest_stays(redrive, moto_url, proxy):
    create_stack(moto_url, "gdt-redrive-fail")
    _fill_dlq(moto_url, "gdt-redrive-fail", 5)
    proxy.fail_next(after=2, reason="AccessDenied: kms:GenerateDataKey")
    res = redrive("--function-name", "gdt-redrive-fail")
    assert res.code == 1, res.stderr
    assert ("gdtrustar: error: the move ended failed after 2 messages: AccessDenied: kms:GenerateDataKey; "
            "what was not moved is still in the dead-letter queue") in res.stderr
    assert len(_bodies(moto_url, "gdt-redrive-fail-dlq")) == 3
    assert len(_bodies(moto_url, "gdt-redrive-fail-buffer")) == 2


def test_a_move_already_running_is_followed_not_started_twice(redrive, moto_url, proxy):
    outputs = create_stack(moto_url, "gdt-redrive-busy")
    _fill_dlq(moto_url, "gdt-redrive-busy", 5)
    other = boto3.client("sqs", endpoint_url=proxy.url, region_name="us-east-1",  # another operator
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    other.start_message_move_task(SourceArn=outputs["DeadLetterQueueArn"], DestinationArn=outputs["BufferQueueArn"])
    res = redrive("--function-name", "gdt-redrive-busy")
    assert res.code == 0, res.stderr
    assert "already running; following it" in res.stderr and "completed: moved 5" in res.stderr
    assert proxy.operations.count("StartMessageMoveTask") == 1  # the other operator's, not ours
    assert _bodies(moto_url, "gdt-redrive-busy-dlq") == []


def test_a_stack_from_before_the_queue_or_no_stack_is_one_line(redrive, moto_url):
    # moto's state is per process, shared by every module's server: a name of its own (test_deploy has gdt-old)
    old = (FIXTURES / "stack-before-queue.json").read_text().replace("gdt-old", "gdt-redrive-old")
    create_stack(moto_url, "gdt-redrive-old", template=old)
    res = redrive("--function-name", "gdt-redrive-old")
    assert res.code == 2
    assert "stack gdt-redrive-old (us-east-1) has no BufferQueueArn: it predates the buffer queue" in res.stderr
    assert "gdtrustar deploy-lambda --function-name gdt-redrive-old" in res.stderr
    assert len(ours(res).splitlines()) == 1
    missing = redrive("--function-name", "gdt-nowhere")
    assert missing.code == 2 and "no stack gdt-nowhere in us-east-1" in missing.stderr
    assert len(ours(missing).splitlines()) == 1
