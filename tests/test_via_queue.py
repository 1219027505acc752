"""`backfill --via-queue` and the shared-budget warning, through the console script.

GuardDuty is the emulator (``AWS_ENDPOINT_URL_GUARDDUTY``); CloudFormation and SQS are moto in
server mode, with SQS reached through ``tests/sims/sqs_moves.py`` only to count the calls the CLI
makes (it forwards everything to moto). The stack is the real template created in moto
(``tests/moto_stack.py``). The last step of the end-to-end test drains the queue with a process
standing in for the stack's function, against the Station simulator.
"""

from __future__ import annotations

import json

import boto3
import pytest

from gdtrustar.budget import key_fingerprint
from gdtrustar.findings import normalize
from gdtrustar.items import Item
from gdtrustar.via_queue import QueueSender
from tests.conftest import base_env
from tests.moto_stack import client, create_stack, queue_messages
from tests.sims.guardduty import GuardDutyEmulator, make_finding, to_eventbridge
from tests.sims.lambda_sqs import run_copies
from tests.sims.sqs_moves import SqsMoveProxy


def ours(res) -> str:
    """gdtrustar's own stderr lines (an in-process run also shows the moto server's access log)."""
    return "\n".join(line for line in res.stderr.splitlines() if line.startswith("gdtrustar:"))

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # moto: "not supported by CloudFormation"


@pytest.fixture
def gd():
    with GuardDutyEmulator() as emulator:
        yield emulator


@pytest.fixture
def proxy(moto_url):
    with SqsMoveProxy(moto_url) as server:
        yield server


@pytest.fixture
def aws_cli(cli, gd, moto_url, proxy):
    cli.env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_ENDPOINT_URL_SQS": proxy.url,
                    "AWS_ENDPOINT_URL_GUARDDUTY": gd.url})
    return cli


def _seed(gd, region: str, findings: list) -> None:
    gd.add_findings(region, gd.add_detector(region), findings)


def test_via_queue_queues_eventbridge_bodies_ten_a_call_and_the_function_delivers_them(
        aws_cli, gd, sim, moto_url, proxy, tmp_path):
    create_stack(moto_url, "gdt-vq", EnclaveIds="enc-a,enc-b", MaxRate="30")
    findings = [make_finding(i) for i in range(25)]
    _seed(gd, "us-east-1", findings)
    res = aws_cli("backfill", "--region", "us-east-1", "--via-queue", "--function-name", "gdt-vq", "--json")
    assert res.code == 0, res.stderr
    assert res.actions() == {"queued": 25}  # no TruSTAR credentials needed on this machine
    assert proxy.operations.count("SendMessageBatch") == 3 and "SendMessage" not in proxy.operations
    assert ("gdtrustar: the buffer queue of gdt-vq holds about 25 findings; they drain in about 2 min at the "
            "stack's budget of 30 calls/min, 2 calls each, with or without this machine") in res.stderr
    bodies = [json.loads(m["Body"]) for m in queue_messages(moto_url, "gdt-vq-buffer")]
    assert sorted(b["detail"]["id"] for b in bodies) == sorted(f["id"] for f in findings)
    for body in bodies:  # exactly what EventBridge sends: the envelope and the camelCase finding
        assert (body["detail-type"], body["source"], body["version"]) == ("GuardDuty Finding", "aws.guardduty", "0")
        original = next(f for f in findings if f["id"] == body["detail"]["id"])
        assert normalize(body) == normalize(to_eventbridge(original))
        assert (body["account"], body["region"]) == (original["accountId"], original["region"])
    assert len(sim.calls) == 0  # the laptop never called Station

    # the stack's function (a process standing in for it) delivers what was queued
    secret = client(moto_url, "secretsmanager").create_secret(
        Name="gdt-vq-creds", SecretString=json.dumps({"api_key": "test-key", "api_secret": "test-secret"}))["ARN"]
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "TRUSTAR_SECRET_ARN": secret, "TRUSTAR_API_ENDPOINT": sim.api_endpoint,
           "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint, "TRUSTAR_ENCLAVE_IDS": "enc-a,enc-b",
           "TRUSTAR_MAX_RATE": "60000", "GDTRUSTAR_MAX_CONCURRENCY": "2"}  # pacing is not under test here
    url = client(moto_url, "sqs").get_queue_url(QueueName="gdt-vq-buffer")["QueueUrl"]
    (stats,) = run_copies([{"env": env, "endpoint": moto_url, "region": "us-east-1", "queue_url": url,
                            "timeout": 120, "stop_after": 120}], tmp_path, {**base_env(tmp_path), **env})
    assert stats["raised"] == [] and stats["deleted"] == 25, stats
    by_key = sim.reports_by_external_id()
    assert len(by_key) == 50 and all(len(v) == 1 for v in by_key.values())


def test_a_finding_over_the_queue_limit_is_one_line_and_goes_to_the_failures_file(
        aws_cli, gd, moto_url, tmp_path):
    outputs = create_stack(moto_url, "gdt-vq-big")
    client(moto_url, "sqs").set_queue_attributes(QueueUrl=outputs["BufferQueueUrl"],
                                                 Attributes={"MaximumMessageSize": "262144"})
    big = make_finding(1)
    big["description"] = "x" * 300_000
    _seed(gd, "us-east-1", [make_finding(0), big, make_finding(2)])
    failures = tmp_path / "failed.jsonl"
    res = aws_cli("backfill", "--region", "us-east-1", "--via-queue", "--function-name", "gdt-vq-big",
                  "--failures", str(failures))
    assert res.code == 1, res.stderr
    problems = [line for line in res.stderr.splitlines() if line.startswith("gdtrustar: failed:")]
    assert len(problems) == 1 and big["id"] in problems[0]
    assert "is over the queue's limit of 262144 bytes; send it directly with gdtrustar send" in problems[0]
    (record,) = [json.loads(line) for line in failures.read_text().splitlines()]
    assert record["finding"]["id"] == big["id"] and len(record["finding"]["description"]) == 300_000
    queued = queue_messages(moto_url, "gdt-vq-big-buffer")
    assert sorted(json.loads(m["Body"])["detail"]["id"] for m in queued) == sorted(
        [make_finding(0)["id"], make_finding(2)["id"]])


def test_the_same_finding_is_queued_once_per_run_unless_newer_and_batches_respect_the_byte_limit(
        moto_url, proxy):
    sqs = client(moto_url, "sqs")
    url = sqs.create_queue(QueueName="vq-unit", Attributes={"MaximumMessageSize": "12000"})["QueueUrl"]
    outcomes = []
    through_proxy = boto3.client("sqs", endpoint_url=proxy.url, region_name="us-east-1",
                                 aws_access_key_id="testing", aws_secret_access_key="testing")
    sender = QueueSender(through_proxy, url, outcomes.append, max_bytes=12000)
    finding = normalize(make_finding(1))
    newer = dict(finding, updatedAt="2031-01-01T00:00:00.000Z")
    for f in (finding, finding, newer, finding, *[normalize(make_finding(i)) for i in range(2, 9)]):
        sender.submit(Item(f"test:{f['id']}", finding=f))
    sender.flush()
    assert [o.action for o in outcomes].count("skipped") == 2  # the repeat and the older copy after the newer
    assert [o.action for o in outcomes].count("queued") == 9
    size = max(len(json.dumps(to_eventbridge(make_finding(i)))) for i in range(1, 9))
    per_call = 12000 // size
    assert proxy.operations.count("SendMessageBatch") == -(-9 // per_call)  # packed up to the byte limit
    assert len(queue_messages(moto_url, "vq-unit")) == 9


def test_entries_sqs_fails_are_retried_and_entries_it_refuses_are_listed(moto_url, proxy):
    url = client(moto_url, "sqs").create_queue(QueueName="vq-faults")["QueueUrl"]
    through_proxy = boto3.client("sqs", endpoint_url=proxy.url, region_name="us-east-1",
                                 aws_access_key_id="testing", aws_secret_access_key="testing")
    outcomes, pauses = [], []
    sender = QueueSender(through_proxy, url, outcomes.append, max_bytes=262144, sleep=pauses.append)
    proxy.fail_batches_next(2, sender_fault=False)  # SQS-side: retried, then accepted
    for i in range(3):
        sender.submit(Item(f"test:{i}", finding=normalize(make_finding(i))))
    sender.flush()
    assert [o.action for o in outcomes] == ["queued"] * 3 and len(pauses) == 2
    proxy.fail_batches_next(1, sender_fault=True)  # the sender's fault: never retried, listed
    sender.submit(Item("test:9", finding=normalize(make_finding(9))))
    sender.flush()
    assert outcomes[-1].action == "failed" and "InvalidMessageContents" in outcomes[-1].error
    assert outcomes[-1].finding["id"] == make_finding(9)["id"]
    assert len(queue_messages(moto_url, "vq-faults")) == 3


def test_via_queue_with_dry_run_stays_a_direct_dry_run_and_sends_nothing(aws_cli, gd, proxy):
    _seed(gd, "us-east-1", [make_finding(i) for i in range(3)])
    res = aws_cli("backfill", "--region", "us-east-1", "--via-queue", "--dry-run", "--json")
    assert res.code == 0, res.stderr
    assert res.actions() == {"dry-run": 3}
    assert proxy.operations == []


def test_via_queue_without_a_stack_is_one_line(aws_cli, gd):
    _seed(gd, "us-east-1", [make_finding(1)])
    res = aws_cli("backfill", "--region", "us-east-1", "--via-queue", "--function-name", "gdt-absent")
    assert res.code == 2
    assert ours(res) == ("gdtrustar: error: no stack gdt-absent in us-east-1: deploy it with gdtrustar "
                                  "deploy-lambda (or pass --function-name / --region)")


REGION_B = "eu-west-2"  # stacks of the budget tests live alone in this region


def test_direct_backfill_warns_once_when_a_stack_spends_the_same_key(aws_cli, gd, sim, moto_url):
    aws_cli.station(sim)
    create_stack(moto_url, "gdt-same-key", region=REGION_B, MaxRate="45",
                 KeyFingerprint=key_fingerprint(sim.api_endpoint, "test-key"))
    create_stack(moto_url, "gdt-other-key", region=REGION_B, MaxRate="60",
                 KeyFingerprint=key_fingerprint(sim.api_endpoint, "someone-else"))
    _seed(gd, REGION_B, [make_finding(1, region=REGION_B)])  # at 30/min every call more is 2 s more
    res = aws_cli("backfill", "--region", REGION_B, env={"TRUSTAR_MAX_RATE": "30"})
    assert res.code == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "warning:" in line]
    assert warnings == ["gdtrustar: warning: deployed stack gdt-same-key (eu-west-2, 45/min) uses this API key: "
                        "45 + this run's --max-rate 30 = 75 calls/min, over the key's 60/min; lower one share, "
                        "or use --via-queue"]
    assert "test-key" not in res.stderr and "test-secret" not in res.stderr
    _seed(gd, "us-west-1", [make_finding(9, region="us-west-1")])
    quiet = aws_cli("backfill", "--region", "us-west-1",  # no stack there; own state: no wait behind the first run
                    env={"TRUSTAR_MAX_RATE": "30", "XDG_STATE_HOME": str(aws_cli.tmp_path / "state2")})
    assert quiet.code == 0 and "warning:" not in quiet.stderr, quiet.stderr


def test_a_stack_whose_key_is_unknown_may_share_it_and_a_dry_run_never_asks(aws_cli, gd, sim, moto_url):
    aws_cli.station(sim)
    region = "ap-south-1"
    create_stack(moto_url, "gdt-byo-secret", region=region, MaxRate="20")  # deployed with --secret-arn only
    _seed(gd, region, [make_finding(1, region=region)])
    res = aws_cli("backfill", "--region", region, env={"TRUSTAR_MAX_RATE": "30"})
    assert res.code == 0, res.stderr
    assert ("gdtrustar: warning: deployed stack gdt-byo-secret (ap-south-1, 20/min) may use this API key: "
            "20 + this run's --max-rate 30 = 50 calls/min, within the key's 60/min") in res.stderr
    dry = aws_cli("backfill", "--region", region, "--dry-run")
    assert dry.code == 0 and "warning:" not in dry.stderr
