"""The handler on the queue path, driven by real SQS messages (moto in server mode).

Messages are sent to and received from a real queue with a redrive policy, and the Lambda event is
built from what ``ReceiveMessage`` returned (``tests/sims/lambda_sqs.py``). In-process tests check
one batch at a time; the concurrent test runs several processes standing in for the function's
copies against one Station simulator with a quota.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from gdtrustar import errors, lambda_handler
from tests.conftest import base_env
from tests.moto_stack import client
from tests.sims.guardduty import make_finding, to_eventbridge
from tests.sims.lambda_sqs import FakeContext, receive, run_copies, settle, sqs_event

REGION = "us-east-1"


@pytest.fixture
def queues(moto_url):
    """A buffer queue redriving to a dead-letter queue after 3 receives, as the stack makes them."""
    sqs = client(moto_url, "sqs")
    name = f"q{uuid.uuid4().hex[:10]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    buffer = sqs.create_queue(QueueName=f"{name}-buffer", Attributes={
        "VisibilityTimeout": "725",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=buffer, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, buffer, arn, dlq


@pytest.fixture
def function_env(moto_url, sim):
    """The function's environment as the stack sets it (secret in Secrets Manager on moto)."""
    credentials = json.dumps({"api_key": "test-key", "api_secret": "test-secret"})
    arn = client(moto_url, "secretsmanager").create_secret(Name=f"gdt-{uuid.uuid4().hex}",
                                                            SecretString=credentials)["ARN"]
    return {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "TRUSTAR_SECRET_ARN": arn, "TRUSTAR_API_ENDPOINT": sim.api_endpoint,
            "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint, "TRUSTAR_ENCLAVE_IDS": "enc-a",
            "TRUSTAR_MAX_RATE": "600", "GDTRUSTAR_MAX_CONCURRENCY": "2", "GDTRUSTAR_BACKOFF_BASE": "0.01",
            "GDTRUSTAR_BACKOFF_CAP": "0.05"}


@pytest.fixture
def warm(monkeypatch, function_env):
    """The handler in this process with the function's environment, cold at start and end."""
    for name in ("TRUSTAR_API_KEY", "TRUSTAR_API_SECRET", "API_KEY", "API_SECRET", "ENCLAVE_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in function_env.items():
        monkeypatch.setenv(name, value)
    lambda_handler.clear_cache()
    yield
    lambda_handler.clear_cache()
    logging.getLogger().handlers.clear()  # the handler's log stream was this test's captured stderr


def _send(sqs, url: str, bodies: list) -> list:
    ids = []
    for start in range(0, len(bodies), 10):
        chunk = bodies[start:start + 10]
        sent = sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)])
        assert not sent.get("Failed")
        ids += [ok["MessageId"] for ok in sorted(sent["Successful"], key=lambda ok: int(ok["Id"]))]
    return ids


def _batch(sqs, url: str, arn: str, expected: int) -> tuple[list, dict]:
    messages = receive(sqs, url, wait=0)
    assert len(messages) == expected
    return messages, sqs_event(messages, arn, REGION)


def _event_body(finding: dict) -> str:
    return json.dumps(to_eventbridge(finding))


def _failures(result: dict) -> set:
    return {f["itemIdentifier"] for f in result["batchItemFailures"]}


def test_a_batch_of_ten_is_delivered_and_all_its_messages_deleted(warm, queues, sim):
    sqs, url, arn, _ = queues
    _send(sqs, url, [_event_body(make_finding(i)) for i in range(10)])
    messages, event = _batch(sqs, url, arn, 10)
    result = lambda_handler.handler(event, FakeContext(120))
    assert result == {"batchItemFailures": []}
    assert settle(sqs, url, messages, result, raised=False) == (10, 0)
    assert len(sim.reports) == 10 and sim.count("upsert") == 10


def test_the_same_finding_twice_in_a_batch_costs_one_call_and_the_latest_wins(warm, queues, sim):
    sqs, url, arn, _ = queues
    finding = make_finding(1)
    newer = dict(finding, updatedAt="2031-05-05T05:05:05.000Z", title="the newer title")
    ids = _send(sqs, url, [_event_body(newer), _event_body(finding), _event_body(make_finding(2))])
    messages, event = _batch(sqs, url, arn, 3)
    result = lambda_handler.handler(event, FakeContext(120))
    assert result == {"batchItemFailures": []}  # both messages of the finding share its success
    assert sim.count("upsert") == 2
    (report,) = [r for r in sim.reports if finding["id"] in r["reportBody"]]
    assert "the newer title" in report["title"]
    assert settle(sqs, url, messages, result, raised=False) == (3, 0) and len(ids) == 3


def test_what_is_not_a_deliverable_finding_is_logged_and_left_for_the_dead_letter_queue(
        warm, queues, sim, capfd):
    sqs, url, arn, dlq = queues
    unreadable = make_finding(3)
    unreadable["id"] += "\ud800"  # valid JSON escape, a lone surrogate: not valid text
    unrenderable = dict(make_finding(5), partition=[[1, [2]]])  # the mapper raised TypeError on it when written
    bad = ["{not json", json.dumps({"detail-type": "EC2 Instance State-change Notification",
                                    "source": "aws.ec2", "detail": {}}), _event_body(unreadable)]
    unrenderable_body = _event_body(unrenderable)
    ids = _send(sqs, url, [*bad, unrenderable_body, _event_body(make_finding(4))])
    rendered = None
    for receipt in range(1, 4):  # every receive returns them; SQS moves them after maxReceiveCount (3)
        messages, event = _batch(sqs, url, arn, 5 if receipt == 1 else 4 - bool(rendered))
        result = lambda_handler.handler(event, FakeContext(120))
        rendered = ids[3] not in _failures(result) if rendered is None else rendered
        assert _failures(result) == set(ids[:3] if rendered else ids[:4])
        settle(sqs, url, messages, result, raised=False)
    assert receive(sqs, url, wait=0) == []  # the fourth receive finds them gone ...
    moved = receive(sqs, dlq, wait=0)  # ... to the dead-letter queue, bodies unchanged
    expected = bad if rendered else [*bad, unrenderable_body]
    assert sorted(m["Body"] for m in moved) == sorted(expected)
    lines = [line for line in capfd.readouterr().err.splitlines() if "left for the dead-letter queue" in line]
    assert len(lines) == 3 * len(expected)  # one line per message and receive
    reasons = ("body is not JSON", "not a GuardDuty finding", "not valid Unicode", "cannot map finding")
    for message_id, reason in list(zip(ids, reasons))[:len(expected)]:
        assert len([line for line in lines if message_id in line and reason in line]) == 3, (reason, lines)
    assert len(sim.reports) == 1 + bool(rendered)  # never deleted without a report


NEEDS_DEADLINE = pytest.mark.skipif(not hasattr(errors, "DeadlineExceededError"),
                                    reason="needs StationClient.deadline from the pacing work (issue 8)")


@NEEDS_DEADLINE
def test_a_429_it_cannot_wait_out_returns_the_messages_and_never_raises(warm, queues, sim):
    sqs, url, arn, _ = queues
    ids = _send(sqs, url, [_event_body(make_finding(i)) for i in range(20, 25)])
    messages, event = _batch(sqs, url, arn, 5)
    lambda_handler.handler({"Records": event["Records"][:1]}, FakeContext(120))  # warm: enclave check done
    settle(sqs, url, messages[:1], {"batchItemFailures": []}, raised=False)
    sim.storm_429(100, wait_ms=200_000, kinds={"upsert"})  # a wait that ends after the invocation's deadline
    context = FakeContext(120)
    result = lambda_handler.handler({"Records": event["Records"][1:]}, context)
    assert context.get_remaining_time_in_millis() > 0  # it did not sit out the 200 s
    assert _failures(result) == set(ids[1:])
    settle(sqs, url, messages[1:], result, raised=False)
    sim.clear_faults()
    messages, event = _batch(sqs, url, arn, 4)  # redelivered by SQS ...
    lambda_handler.clear_cache()  # ... to another copy: the warm one still honours Station's 200 s pause
    assert lambda_handler.handler(event, FakeContext(120)) == {"batchItemFailures": []}
    assert len(sim.reports_by_external_id()) == 5


def test_nothing_is_started_after_the_deadline(warm, queues, sim):
    sqs, url, arn, _ = queues
    ids = _send(sqs, url, [_event_body(make_finding(i)) for i in range(30, 40)])
    messages, event = _batch(sqs, url, arn, 10)
    result = lambda_handler.handler(event, FakeContext(lambda_handler_safety() - 0.5))
    assert _failures(result) == set(ids)
    assert sim.count("upsert") == 0


def lambda_handler_safety() -> float:
    from gdtrustar.sqs_batch import SAFETY_SECONDS

    return SAFETY_SECONDS


@NEEDS_DEADLINE
def test_a_paced_batch_stops_at_the_deadline_and_returns_the_rest(warm, queues, sim, monkeypatch):
    """60 calls/min over 2 copies: one call about every 2 s per copy, so 10 writes cannot fit in 5 s."""
    monkeypatch.setenv("TRUSTAR_MAX_RATE", "60")
    lambda_handler.clear_cache()
    sqs, url, arn, _ = queues
    ids = _send(sqs, url, [_event_body(make_finding(i)) for i in range(40, 50)])
    messages, event = _batch(sqs, url, arn, 10)
    context = FakeContext(lambda_handler_safety() + 5)
    result = lambda_handler.handler(event, context)
    assert context.get_remaining_time_in_millis() > 0  # returned before the Lambda timeout
    delivered = sim.count("upsert", status=200) + sim.count("upsert", status=201)
    assert 0 < delivered < 10 and len(_failures(result)) == 10 - delivered
    assert _failures(result) <= set(ids)
    assert sim.count(status=429) == 0


def test_an_old_stacks_dead_letter_record_is_delivered_after_redrive(warm, queues, sim):
    """A Lambda on-failure record (body of the pre-queue stack's dead-letter queue) wraps the event."""
    sqs, url, arn, _ = queues
    event = to_eventbridge(make_finding(60))
    record = {"version": "1.0", "timestamp": "2026-01-01T00:00:00.000Z",
              "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:1:function:f",
                                 "condition": "RetriesExhausted", "approximateInvokeCount": 3},
              "requestPayload": event, "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
              "responsePayload": {"errorMessage": "boom"}}
    _send(sqs, url, [json.dumps(record)])
    _, batch = _batch(sqs, url, arn, 1)
    assert lambda_handler.handler(batch, FakeContext(120)) == {"batchItemFailures": []}
    assert len(sim.reports) == 1


def test_concurrent_copies_drain_a_burst_with_nothing_lost(queues, sim, function_env, tmp_path):
    """3 processes = 3 copies sharing a 600/min budget against a Station allowing 600/min."""
    sqs, url, _, dlq = queues
    sim.quota_per_minute = 600
    findings = [make_finding(i) for i in range(100, 150)]
    updates = [dict(f, updatedAt="2031-01-01T00:00:00.000Z") for f in findings[:6]]
    bad = ["{truncated", json.dumps({"detail-type": "AWS API Call via CloudTrail", "source": "aws.s3"})]
    _send(sqs, url, [_event_body(f) for f in findings + updates] + bad)
    env = {**base_env(tmp_path), **function_env, "GDTRUSTAR_MAX_CONCURRENCY": "3"}
    spec = {"env": {**function_env, "GDTRUSTAR_MAX_CONCURRENCY": "3"}, "endpoint": function_env["AWS_ENDPOINT_URL"],
            "region": REGION, "queue_url": url, "timeout": 120, "stop_after": 240}
    stats = run_copies([spec] * 3, tmp_path, env)
    assert [s.get("raised") for s in stats] == [[], [], []], [s["stderr"][-2000:] for s in stats]
    assert all(s["invocations"] > 0 for s in stats)  # all three copies took part
    assert sum(s["late"] for s in stats) == 0
    # nothing lost, nothing doubled: one report per finding; only the two bad bodies dead-lettered
    by_key = sim.reports_by_external_id()
    assert len(by_key) == len(findings) and all(len(v) == 1 for v in by_key.values())
    assert sorted(m["Body"] for m in receive(sqs, dlq, wait=0)) == sorted(bad)
    assert sim.count(status=429) == 0
    assert sim.count("upsert") <= len(findings) + len(updates)
