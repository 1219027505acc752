"""findings.py: shape detection, model-driven PascalCase -> camelCase, canonical values, validation.

PascalCase input is produced by botocore's own rest-json parser (what boto3's ``get_findings``
returns), so these tests check our mapping against the SDK, not against our own idea of it.
"""

from __future__ import annotations

import copy
import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import botocore.parsers
import botocore.session
import pytest

from gdtrustar.errors import InvalidFindingError
from gdtrustar.findings import explode, is_sample, normalize

SAMPLES = Path(__file__).resolve().parent.parent / "sample_events"
_OUTPUT = botocore.session.get_session().get_service_model("guardduty").operation_model("GetFindings").output_shape


def boto3_form(wire_finding: dict) -> dict:
    """The finding exactly as boto3 ``get_findings()`` returns it (PascalCase, datetimes, floats)."""
    body = json.dumps({"findings": [wire_finding]}).encode()
    parsed = botocore.parsers.RestJSONParser().parse({"body": body, "headers": {}, "status_code": 200}, _OUTPUT)
    return parsed["Findings"][0]


def api_wire(finding: dict) -> dict:
    """The GetFindings wire form: additionalInfo wrapped as {value: JSON string, type: default}."""
    wire = copy.deepcopy(finding)
    info = wire.get("service", {}).get("additionalInfo")
    if isinstance(info, dict):
        wire["service"]["additionalInfo"] = {"value": json.dumps(info), "type": "default"}
    return wire


def cli_form(pascal: dict) -> dict:
    """What ``aws guardduty get-findings`` prints: boto3's structure with ISO-8601 strings."""
    return json.loads(json.dumps(pascal, default=lambda value: value.isoformat()))


def sample_documents() -> list[tuple[str, object]]:
    """(file name, parsed document) for every sample file; .jsonl and .json.gz read inline."""
    docs: list[tuple[str, object]] = []
    for path in sorted(SAMPLES.iterdir()):
        if path.name.endswith(".json.gz"):
            docs.append((path.name, json.loads(gzip.decompress(path.read_bytes()))))
        elif path.suffix == ".jsonl":
            docs.extend((path.name, json.loads(line)) for line in path.read_text().splitlines() if line.strip())
        elif path.suffix == ".json":
            docs.append((path.name, json.loads(path.read_text())))
    return docs


# Sample files that are GuardDuty events but deliberately not findings (skipped, never invalid).
NOT_FINDINGS = frozenset({"eventbridge-s3-malware-object-scan-result.json"})


def sample_candidates() -> list[tuple[str, object]]:
    """(file[where], candidate) for every finding in sample_events/ (the non-finding samples left out)."""
    return [(f"{name}{where}", candidate) for name, doc in sample_documents() if name not in NOT_FINDINGS
            for where, candidate in explode(doc)]


@pytest.fixture
def seed_event() -> dict:
    return json.loads((SAMPLES / "eventbridge-seed-integration-guide.json").read_text())


# --- the same finding through every door --------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "eventbridge-seed-integration-guide.json",
        "eventbridge-ec2-port-probe.json",
        "eventbridge-eks-exec-in-kube-system.json",
        "eventbridge-ecs-runtime-crypto-dns.json",
        "eventbridge-attack-sequence-s3.json",
        "eventbridge-rds-anomalous-login.json",
        "eventbridge-lambda-c2-activity.json",
    ],
)
def test_eventbridge_camel_boto3_and_cli_forms_normalize_identically(name):
    event = json.loads((SAMPLES / name).read_text())
    detail = event["detail"]
    pascal = boto3_form(api_wire(detail))
    assert "Id" in pascal and "id" not in pascal  # really PascalCase
    expected = normalize(event)
    assert normalize(detail) == expected
    assert normalize(api_wire(detail)) == expected
    assert normalize(pascal) == expected
    assert normalize(cli_form(pascal)) == expected
    json.dumps(normalize(pascal))  # datetimes from boto3 are gone


def test_event_is_deduplicated_on_the_finding_id_not_the_event_id(seed_event):
    finding = normalize(seed_event)
    assert finding["id"] == seed_event["detail"]["id"] != seed_event["id"]


def test_sample_dedup_pair_is_one_finding_in_two_shapes():
    event = json.loads((SAMPLES / "dedup-eventbridge-ssh-bruteforce.json").read_text())
    cli_doc = json.loads((SAMPLES / "dedup-pascal-ssh-bruteforce.json").read_text())
    assert "detail-type" in event and "Findings" in cli_doc
    [(where, pascal)] = list(explode(cli_doc))
    assert where == "Findings[0]" and "UpdatedAt" in pascal
    assert normalize(event) == normalize(pascal)


# --- names come from the service model, not from lower-casing ------------------------------------


def _tricky_wire() -> dict:
    return {
        "id": "f1",
        "type": "Execution:Kubernetes/Test",
        "severity": 9.5,
        "accountId": "123456789012",
        "region": "us-west-2",
        "arn": "arn:aws:guardduty:us-west-2:123456789012:detector/d/finding/f1",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "updatedAt": "2025-01-01T00:00:00.000Z",
        "schemaVersion": "2.0",
        "resource": {
            "resourceType": "Instance",
            "instanceDetails": {"productCodes": [{"productCodeId": "abc123", "productCodeType": "marketplace"}]},
        },
        "service": {
            "action": {
                "actionType": "KUBERNETES_API_CALL",
                "kubernetesApiCallAction": {
                    "sourceIPs": ["192.0.2.10", "2001:db8::10"],
                    "verb": "get",
                    "remoteIpDetails": {
                        "ipAddressV4": "192.0.2.10",
                        "geoLocation": {"lat": 1.5, "lon": -2.25},
                    },
                },
            },
            "detection": {
                "sequence": {"endpoints": [{"id": "e1", "ip": "192.0.2.11", "location": {"lat": 40.5, "lon": -74.25}}]}
            },
        },
    }


def test_botocore_really_uses_the_tricky_names():
    pascal = boto3_form(_tricky_wire())
    assert pascal["Resource"]["InstanceDetails"]["ProductCodes"][0] == {
        "Code": "abc123",
        "ProductType": "marketplace",
    }
    assert "SourceIps" in pascal["Service"]["Action"]["KubernetesApiCallAction"]
    assert pascal["Service"]["Detection"]["Sequence"]["Endpoints"][0]["Location"] == {
        "Latitude": 40.5,
        "Longitude": -74.25,
    }


def test_tricky_names_map_to_the_wire_names():
    finding = normalize(boto3_form(_tricky_wire()))
    assert finding["resource"]["instanceDetails"]["productCodes"] == [
        {"productCodeId": "abc123", "productCodeType": "marketplace"}
    ]
    call = finding["service"]["action"]["kubernetesApiCallAction"]
    assert call["sourceIPs"] == ["192.0.2.10", "2001:db8::10"]
    assert call["remoteIpDetails"]["geoLocation"] == {"lat": 1.5, "lon": -2.25}
    assert finding["service"]["detection"]["sequence"]["endpoints"][0]["location"] == {
        "lat": 40.5,
        "lon": -74.25,
    }
    assert finding == normalize(_tricky_wire())


def test_hand_written_pascal_with_tricky_names():
    pascal = {
        "Id": "f2",
        "Type": "T",
        "Severity": 3,
        "AccountId": "123456789012",
        "Region": "eu-west-1",
        "Resource": {"InstanceDetails": {"ProductCodes": [{"Code": "x", "ProductType": "y"}]}},
        "Service": {"Action": {"KubernetesApiCallAction": {"SourceIps": ["198.51.100.1"]}}},
    }
    finding = normalize(pascal)
    assert finding["resource"]["instanceDetails"]["productCodes"] == [{"productCodeId": "x", "productCodeType": "y"}]
    assert finding["service"]["action"]["kubernetesApiCallAction"] == {"sourceIPs": ["198.51.100.1"]}
    assert finding["severity"] == 3.0 and isinstance(finding["severity"], float)


def test_map_keys_are_data_and_are_not_renamed():
    wire = _tricky_wire()
    wire["service"]["action"]["awsApiCallAction"] = {"affectedResources": {"AWS::S3::Bucket": "b", "Key": "v"}}
    finding = normalize(boto3_form(wire))
    assert finding["service"]["action"]["awsApiCallAction"]["affectedResources"] == {
        "AWS::S3::Bucket": "b",
        "Key": "v",
    }


# --- additionalInfo ---------------------------------------------------------------------------------


def test_additional_info_api_and_eventbridge_forms_give_the_same_object():
    free_form = {
        "unusualProtocol": "UDP",
        "ThreatListName": "List",
        "sample": True,
        "nested": {"KeyA": [1, 2]},
    }
    event_finding = dict(_tricky_wire(), service={"additionalInfo": free_form})
    api_finding = dict(_tricky_wire(), service={"additionalInfo": {"value": json.dumps(free_form), "type": "default"}})
    pascal = {
        "Id": "f1",
        "Type": "T",
        "Severity": 1,
        "AccountId": "1",
        "Region": "r",
        "Service": {"AdditionalInfo": {"Value": json.dumps(free_form), "Type": "default"}},
    }
    for doc in (event_finding, api_finding, pascal):
        assert normalize(doc)["service"]["additionalInfo"] == free_form  # inner keys are data: not renamed


def test_additional_info_that_is_not_json_is_kept_as_value_and_type():
    doc = dict(_tricky_wire(), service={"additionalInfo": {"value": "not json {", "type": "default"}})
    assert normalize(doc)["service"]["additionalInfo"] == {"value": "not json {", "type": "default"}
    pascal = {
        "Id": "f",
        "Type": "T",
        "Severity": 1,
        "AccountId": "1",
        "Region": "r",
        "Service": {"AdditionalInfo": {"Value": "[1, 2]", "Type": "default"}},
    }
    assert normalize(pascal)["service"]["additionalInfo"] == {"value": "[1, 2]", "type": "default"}


# --- timestamps ------------------------------------------------------------------------------------

CANONICAL = "2017-10-31T23:16:23.824Z"
UTC_MOMENT = datetime(2017, 10, 31, 23, 16, 23, 824000, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "value",
    [
        "2017-10-31T23:16:23.824Z",
        "2017-10-31T23:16:23.824+00:00",
        "2017-11-01T01:16:23.824+02:00",
        "2017-10-31T20:16:23.824-0300",
        "2017-10-31 23:16:23.824",
        "2017-10-31T23:16:23.824999Z",
        1509491783824,
        1509491783.824,
        "1509491783824",
        UTC_MOMENT,
        UTC_MOMENT.replace(tzinfo=None),
        UTC_MOMENT.astimezone(timezone(timedelta(hours=-5))),
    ],
)
def test_every_time_form_becomes_canonical_utc_milliseconds(value):
    doc = dict(_tricky_wire(), createdAt=value, updatedAt=value)
    doc["resource"] = {
        "instanceDetails": {"launchTime": value},
        "eksClusterDetails": {"createdAt": value},
        "lambdaDetails": {"lastModifiedAt": value},
    }
    doc["service"] = {
        "eventFirstSeen": value,
        "eventLastSeen": value,
        "runtimeDetails": {"process": {"startTime": value}},
    }
    finding = normalize(doc)
    assert finding["createdAt"] == finding["updatedAt"] == CANONICAL
    assert finding["resource"]["instanceDetails"]["launchTime"] == CANONICAL
    assert finding["resource"]["eksClusterDetails"]["createdAt"] == CANONICAL
    assert finding["resource"]["lambdaDetails"]["lastModifiedAt"] == CANONICAL
    assert finding["service"]["eventFirstSeen"] == finding["service"]["eventLastSeen"] == CANONICAL
    assert finding["service"]["runtimeDetails"]["process"]["startTime"] == CANONICAL


def test_whole_second_and_epoch_ms_forms(seed_event):
    finding = normalize(seed_event)
    assert finding["service"]["eventFirstSeen"] == "2017-10-31T23:16:23.000Z"
    assert finding["resource"]["instanceDetails"]["launchTime"] == "2017-04-21T00:47:55.000Z"  # 1492735675000


def test_boto3_datetimes_become_canonical_strings():
    wire = _tricky_wire()
    wire["resource"]["eksClusterDetails"] = {"name": "c", "createdAt": 1717236000.5}
    pascal = boto3_form(wire)
    assert isinstance(pascal["Resource"]["EksClusterDetails"]["CreatedAt"], datetime)
    assert normalize(pascal)["resource"]["eksClusterDetails"]["createdAt"] == "2024-06-01T10:00:00.500Z"


def test_unparsable_nested_time_is_kept_but_bad_created_at_is_invalid():
    doc = _tricky_wire()
    doc["resource"]["instanceDetails"]["launchTime"] = "sometime last week"
    assert normalize(doc)["resource"]["instanceDetails"]["launchTime"] == "sometime last week"
    with pytest.raises(InvalidFindingError, match="createdAt"):
        normalize(dict(_tricky_wire(), createdAt="yesterday"))
    with pytest.raises(InvalidFindingError, match="updatedAt"):
        normalize(dict(_tricky_wire(), updatedAt="2017-13-45T99:00:00Z"))


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc, reason",
    [
        ([1, 2], "got list"),
        ("finding", "got str"),
        (None, "got NoneType"),
        (42, "got int"),
        (
            {"detail-type": "AWS API Call via CloudTrail", "source": "aws.s3", "detail": {}},
            "not a GuardDuty finding event (detail-type 'AWS API Call via CloudTrail'",
        ),
        (
            {"detail-type": "GuardDuty Finding", "source": "aws.securityhub", "detail": {"id": "x"}},
            "not a GuardDuty finding event",
        ),
        ({"detail-type": "GuardDuty Finding", "source": "aws.guardduty"}, "no 'detail' object"),
        ({"Findings": [{"Id": "a"}]}, "explode it first"),
        ({"hello": "world"}, "no GuardDuty finding fields"),
        ({"id": "x", "type": "T", "accountId": "1"}, "missing required field(s): severity, region"),
        ({"Id": "x", "Severity": 2.0}, "missing required field(s): type, accountId, region"),
    ],
)
def test_invalid_documents_say_why(doc, reason):
    with pytest.raises(InvalidFindingError) as info:
        normalize(doc)
    assert reason in str(info.value)


@pytest.mark.parametrize("severity", [-0.5, 10.5, "5", True, None, float("nan"), [5]])
def test_severity_must_be_a_number_from_0_to_10(severity):
    doc = dict(_tricky_wire(), severity=severity)
    with pytest.raises(InvalidFindingError, match="severity"):
        normalize(doc)


def test_severity_boundaries_and_integer_severity_are_valid():
    assert normalize(dict(_tricky_wire(), severity=0))["severity"] == 0.0
    assert normalize(dict(_tricky_wire(), severity=10))["severity"] == 10.0


# --- robustness --------------------------------------------------------------------------------------


def test_unknown_fields_are_carried():
    camel = dict(_tricky_wire(), brandNewField={"innerThing": [1, {"deepKey": "v"}]})
    camel["resource"]["newResourceDetails"] = {"someId": "r-1"}
    finding = normalize(camel)
    assert finding["brandNewField"] == {"innerThing": [1, {"deepKey": "v"}]}
    assert finding["resource"]["newResourceDetails"] == {"someId": "r-1"}
    pascal = {
        "Id": "x",
        "Type": "T",
        "Severity": 2,
        "AccountId": "1",
        "Region": "r",
        "BrandNewField": {"InnerThing": "v"},
        "Resource": {"NewResourceDetails": {"SomeId": "r-1"}},
    }
    finding = normalize(pascal)
    assert finding["brandNewField"] == {"innerThing": "v"}
    assert finding["resource"]["newResourceDetails"] == {"someId": "r-1"}


def test_unexpected_types_do_not_crash_and_stay_serialisable():
    doc = dict(_tricky_wire(), resource="not an object", title=["a", "list"])
    doc["service"] = {
        "action": [1, 2],
        "count": "many",
        "archived": "false",
        "additionalInfo": "text",
        "eventFirstSeen": {"odd": True},
        "odd": datetime(2020, 1, 1),
        "set": {1, 2},
    }
    finding = normalize(doc)
    assert finding["resource"] == "not an object"
    assert finding["service"]["archived"] is False
    assert finding["service"]["odd"] == "2020-01-01T00:00:00.000Z"
    json.dumps(finding)


def test_absurd_nesting_is_invalid_not_a_crash():
    deep: dict = {"k": 1}
    for _ in range(5000):
        deep = {"k": deep}
    with pytest.raises(InvalidFindingError, match="nested too deeply"):
        normalize(dict(_tricky_wire(), extra=deep))


def test_nulls_are_dropped_like_boto3_does(seed_event):
    event = copy.deepcopy(seed_event)
    event["detail"]["resource"]["instanceDetails"]["platform"] = None
    event["detail"]["associatedAttackSequenceArn"] = None
    assert normalize(event) == normalize(seed_event)


def test_coercions_match_the_api_form(seed_event):
    finding = normalize(seed_event)
    remote = finding["service"]["action"]["networkConnectionAction"]["remoteIpDetails"]
    assert remote["organization"]["asn"] == "-1"  # EventBridge int, model String
    assert remote["geoLocation"] == {"lat": 0.0, "lon": 0.0}
    assert all(isinstance(v, float) for v in remote["geoLocation"].values())
    assert finding["severity"] == 5.0


def test_normalize_does_not_mutate_its_input(seed_event):
    before = copy.deepcopy(seed_event)
    normalize(seed_event)
    assert seed_event == before


def test_output_is_deterministic(seed_event):
    assert json.dumps(normalize(seed_event)) == json.dumps(normalize(copy.deepcopy(seed_event)))


# --- explode -------------------------------------------------------------------------------------


def test_explode_shapes():
    a, b, c = {"id": "a"}, {"id": "b"}, {"Id": "c"}
    assert list(explode([a, b])) == [("[0]", a), ("[1]", b)]
    assert list(explode([[a], [b, [c]]])) == [("[0][0]", a), ("[1][0]", b), ("[1][1][0]", c)]
    assert list(explode({"Findings": [c, a]})) == [("Findings[0]", c), ("Findings[1]", a)]
    assert list(explode({"findings": [a]})) == [("findings[0]", a)]
    assert list(explode({"failure": {"error": "x"}, "finding": a})) == [("", a)]
    assert list(explode([{"failure": {}, "finding": a}])) == [("[0]", a)]
    assert list(explode({"failure": {}, "document": "junk"})) == [("", "junk")]
    assert list(explode(a)) == [("", a)]
    assert list(explode("text")) == [("", "text")]
    assert list(explode([])) == []


def test_explode_depth_is_bounded():
    doc: object = {"id": "deep"}
    for _ in range(50):
        doc = [doc]
    [(where, candidate)] = list(explode(doc))
    assert isinstance(candidate, list) and where.count("[0]") < 50
    with pytest.raises(InvalidFindingError):
        normalize(candidate)


# --- samples -------------------------------------------------------------------------------------


def test_is_sample_needs_the_flag_not_the_title():
    flagged = dict(_tricky_wire(), service={"additionalInfo": {"sample": True}})
    assert is_sample(normalize(flagged))
    assert is_sample(normalize(dict(_tricky_wire(), service={"additionalInfo": {"sample": "true"}})))
    assert not is_sample(normalize(dict(_tricky_wire(), title="[SAMPLE] Looks like a sample")))
    assert not is_sample(normalize(dict(_tricky_wire(), service={"additionalInfo": {"sample": False}})))
    assert not is_sample({"service": "odd"})


@pytest.mark.parametrize("name, candidate", sample_candidates())
def test_every_sample_event_normalises(name, candidate):
    finding = normalize(candidate)
    json.dumps(finding)
    assert finding["accountId"] == "123456789012"


def test_sample_events_cover_the_brief():
    candidates = [candidate for _, candidate in sample_candidates()]
    findings = [normalize(candidate) for candidate in candidates]
    assert len(findings) >= 12
    names = {path.name for path in SAMPLES.iterdir()}
    assert any(n.endswith(".jsonl") for n in names) and any(n.endswith(".json.gz") for n in names)
    assert sum(1 for c in candidates if isinstance(c, dict) and "detail-type" in c) >= 5
    assert sum(1 for c in candidates if isinstance(c, dict) and "Id" in c) >= 2
    assert sum(1 for c in candidates if isinstance(c, dict) and "id" in c) >= 3
    actions = {f["service"].get("action", {}).get("actionType") for f in findings}
    assert {
        "NETWORK_CONNECTION",
        "PORT_PROBE",
        "DNS_REQUEST",
        "AWS_API_CALL",
        "KUBERNETES_API_CALL",
        "RDS_LOGIN_ATTEMPT",
    } <= actions
    resources = {f["resource"].get("resourceType") for f in findings}
    assert {
        "Instance",
        "AccessKey",
        "S3Bucket",
        "EKSCluster",
        "ECSCluster",
        "RDSDBInstance",
        "Lambda",
    } <= resources
    assert any(f["severity"] >= 9.0 and f["type"].startswith("AttackSequence:") for f in findings)
    assert any(is_sample(f) for f in findings)
    assert any("ebsVolumeScanDetails" in f["service"] for f in findings)
    assert any("runtimeDetails" in f["service"] for f in findings)
    keys = [(f["id"], f["updatedAt"]) for f in findings]
    assert len(keys) - len(set(keys)) == 1  # exactly one finding appears twice (the dedup pair)
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 200_000
