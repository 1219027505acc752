"""The Lambda handler in-process: the same pipeline, Secrets Manager on moto's server, Station sim."""

from __future__ import annotations

import json
import uuid

import pytest

from gdtrustar import lambda_handler
from gdtrustar.errors import DeliveryError, InvalidFindingError
from tests.sims.guardduty import make_finding, to_eventbridge


@pytest.fixture
def lambda_env(monkeypatch, sim, moto_url):
    import boto3

    for name in ("TRUSTAR_API_KEY", "TRUSTAR_API_SECRET", "API_KEY", "API_SECRET", "ENCLAVE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    sm = boto3.client("secretsmanager")
    credentials = json.dumps({"api_key": "test-key", "api_secret": "test-secret"})
    arn = sm.create_secret(Name=f"gdt-{uuid.uuid4().hex}", SecretString=credentials)
    monkeypatch.setenv("TRUSTAR_SECRET_ARN", arn["ARN"])
    monkeypatch.setenv("TRUSTAR_API_ENDPOINT", sim.api_endpoint)
    monkeypatch.setenv("TRUSTAR_AUTH_ENDPOINT", sim.auth_endpoint)
    monkeypatch.setenv("TRUSTAR_ENCLAVE_IDS", "enc-a")
    monkeypatch.setenv("TRUSTAR_MAX_RATE", "60000")
    lambda_handler.clear_cache()
    yield sm, arn["ARN"]
    lambda_handler.clear_cache()


def test_event_creates_then_updates_one_report_and_checks_enclaves_once(lambda_env, sim):
    finding = make_finding(1)
    first = lambda_handler.handler(to_eventbridge(finding), None)
    assert first["finding_id"] == finding["id"] and first["action"] == "created" and first["report_id"]
    finding["updatedAt"] = "2031-01-01T00:00:00.000Z"
    second = lambda_handler.handler(to_eventbridge(finding), None)
    assert second["action"] == "updated"
    assert len(sim.reports) == 1
    assert sim.count("enclaves") == 1  # once per warm container
    assert sim.count("token") == 1


def test_redelivered_event_makes_no_duplicate(lambda_env, sim):
    event = to_eventbridge(make_finding(2))
    lambda_handler.handler(event, None)
    lambda_handler.handler(event, None)
    assert len(sim.reports) == 1


def test_non_guardduty_event_raises(lambda_env, sim):
    with pytest.raises(InvalidFindingError, match="not a GuardDuty finding"):
        lambda_handler.handler({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
                                "detail": {}}, None)
    assert sim.count("upsert") == 0


def test_failed_delivery_raises_so_lambda_retries(lambda_env, sim, monkeypatch):
    monkeypatch.setenv("GDTRUSTAR_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("GDTRUSTAR_BACKOFF_BASE", "0.001")
    lambda_handler.handler(to_eventbridge(make_finding(3)), None)  # warm
    sim.fail_next(100, 503, kinds={"upsert"})
    with pytest.raises(DeliveryError, match="not delivered"):
        lambda_handler.handler(to_eventbridge(make_finding(4)), None)


def test_rotated_secret_is_fetched_again(lambda_env, sim):
    sm, arn = lambda_env
    lambda_handler.handler(to_eventbridge(make_finding(5)), None)
    sim.api_secret = "rotated-secret"
    sim.expire_tokens()
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "test-key",
                                                               "api_secret": "rotated-secret"}))
    result = lambda_handler.handler(to_eventbridge(make_finding(6)), None)
    assert result["action"] == "created"


UNRENDERABLE = {"partition": [[1, [2]]]}  # passes normalize, the mapper raised TypeError on it when written
UNREADABLE = {"id": "\ud800"}  # a lone surrogate (as a JSON escape brings it): invalid text


@pytest.mark.parametrize("change", [UNRENDERABLE, UNREADABLE], ids=["unrenderable", "unreadable"])
def test_a_finding_that_cannot_be_rendered_is_never_a_silent_success(lambda_env, sim, change):
    """Issue 11 item 6: raise (retries, then the dead-letter queue), never return success with action "invalid".

    Should the mapper learn to render the first one, delivering it is fine too: what may not happen is a
    success that delivered nothing.
    """
    finding = make_finding(7)
    finding.update({k: (finding[k] + v if k == "id" else v) for k, v in change.items()})
    event = json.loads(json.dumps(to_eventbridge(finding)))
    try:
        result = lambda_handler.handler(event, None)
    except InvalidFindingError as exc:
        assert "cannot map finding" in str(exc) or "not valid Unicode" in str(exc), exc
        assert sim.count("upsert") == 0
    else:
        assert result["action"] in ("created", "updated") and len(sim.reports) == 1, result
