"""mapper.py: Finding -> Report (title, body, timeBegan, external id and URL), indicator cap."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from pathlib import Path

import pytest

from gdtrustar.findings import normalize
from gdtrustar.mapper import (
    INDICATOR_BUDGET,
    SEVERITY_LABELS,
    TITLE_LIMIT,
    Report,
    build_report,
    console_url,
    count_indicators,
    external_id,
    severity_label,
    to_json,
)
from gdtrustar.station import payload as v13_payload
from gdtrustar.writer import digest
from tests.test_findings import api_wire, boto3_form, cli_form, sample_candidates

SAMPLES = Path(__file__).resolve().parent.parent / "sample_events"
ENCLAVE = "6f3c1a52-0b7e-4d4a-9f0e-2c8d5b7a1e90"
PAYLOAD_KEYS = {
    "title",
    "reportBody",
    "timeBegan",
    "externalTrackingId",
    "externalUrl",
    "enclaveIds",
    "distributionType",
}
TRIM_NOTE = "finding trimmed to stay under Station's 500-indicator limit"


def load(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def seed() -> dict:
    return normalize(load("eventbridge-seed-integration-guide.json"))


def summary_of(report: Report) -> str:
    return report.body.split("Full finding (JSON):")[0]


# --- severity, ids, urls -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "severity, label",
    [
        (0.0, "Low"),
        (1.0, "Low"),
        (3.9, "Low"),
        (4.0, "Medium"),
        (6.9, "Medium"),
        (7.0, "High"),
        (8.9, "High"),
        (9.0, "Critical"),
        (10.0, "Critical"),
        (5, "Medium"),
        (None, "Low"),
        ("8", "Low"),
    ],
)
def test_severity_labels_at_the_boundaries(severity, label):
    assert severity_label(severity) == label


def test_severity_label_table_is_guardduty_bands():
    assert [name for _, name in SEVERITY_LABELS] == ["Critical", "High", "Medium", "Low"]


def test_external_id_is_the_old_integrations_base64_scheme():
    value = external_id("enc-1", "99afba5c5c43e07c9e3e5e2e544e95df")
    assert base64.b64decode(value).decode() == "enc-1|99afba5c5c43e07c9e3e5e2e544e95df"
    assert value == "ZW5jLTF8OTlhZmJhNWM1YzQzZTA3YzllM2U1ZTJlNTQ0ZTk1ZGY="
    assert base64.b64decode(external_id("énclave", "ü")).decode("utf-8") == "énclave|ü"


@pytest.mark.parametrize(
    "partition, region, prefix",
    [
        (
            "aws",
            "eu-central-1",
            "https://eu-central-1.console.aws.amazon.com/guardduty/home?region=eu-central-1#",
        ),
        ("aws-cn", "cn-north-1", "https://console.amazonaws.cn/guardduty/home?region=cn-north-1#"),
        (
            "aws-us-gov",
            "us-gov-west-1",
            "https://console.amazonaws-us-gov.com/guardduty/home?region=us-gov-west-1#",
        ),
        (None, "cn-northwest-1", "https://console.amazonaws.cn/guardduty/home?region=cn-northwest-1#"),
        (None, "us-gov-east-1", "https://console.amazonaws-us-gov.com/guardduty/home?region=us-gov-east-1#"),
    ],
)
def test_console_url_is_partition_aware(partition, region, prefix):
    finding = {"id": "abc123", "region": region}
    if partition:
        finding["partition"] = partition
    url = console_url(finding)
    assert url.startswith(prefix)
    assert url.endswith("#/findings?macros=current&fId=abc123")


def test_console_url_stays_within_500_characters():
    url = console_url({"id": "x" * 600, "region": "us-east-1"})
    assert len(url) <= 500 and url.startswith("https://us-east-1.console.aws.amazon.com/guardduty/")


# --- the report -----------------------------------------------------------------------------------


def test_payload_has_exactly_the_station_fields(seed):
    report = build_report(seed, ENCLAVE)
    payload = v13_payload(report)
    assert set(payload) == PAYLOAD_KEYS
    assert payload["enclaveIds"] == [ENCLAVE]
    assert payload["distributionType"] == "ENCLAVE"
    assert payload["externalTrackingId"] == external_id(ENCLAVE, seed["id"])
    assert payload["externalUrl"] == console_url(seed)
    assert payload["timeBegan"] == "2017-10-31T23:16:23+00:00"
    assert payload["title"] == "[Medium] 99:EC2/Stateless.IntegTest"
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert digest(payload) == expected


def test_digest_changes_with_the_finding(seed):
    changed = copy.deepcopy(seed)
    changed["updatedAt"] = "2018-01-01T00:00:00.000Z"
    assert digest(v13_payload(build_report(changed, ENCLAVE))) != digest(v13_payload(build_report(seed, ENCLAVE)))
    assert digest(v13_payload(build_report(seed, "other"))) != digest(v13_payload(build_report(seed, ENCLAVE)))


@pytest.mark.parametrize(
    "name",
    [
        "eventbridge-seed-integration-guide.json",
        "eventbridge-attack-sequence-s3.json",
        "eventbridge-ecs-runtime-crypto-dns.json",
        "eventbridge-ec2-port-probe.json",
    ],
)
def test_same_finding_from_api_and_eventbridge_gives_a_byte_identical_report(name):
    event = load(name)
    pascal = boto3_form(api_wire(event["detail"]))
    reports = [
        build_report(normalize(doc), ENCLAVE)
        for doc in (event, event["detail"], api_wire(event["detail"]), pascal, cli_form(pascal))
    ]
    assert all(report == reports[0] for report in reports)
    assert len({digest(v13_payload(report)) for report in reports}) == 1


def test_dedup_pair_in_sample_events_gives_one_report():
    event = load("dedup-eventbridge-ssh-bruteforce.json")
    pascal = load("dedup-pascal-ssh-bruteforce.json")["Findings"][0]
    assert v13_payload(build_report(normalize(event), ENCLAVE)) == v13_payload(build_report(normalize(pascal), ENCLAVE))


def test_report_is_deterministic_whatever_the_key_order(seed):
    reordered = json.loads(json.dumps(seed, sort_keys=True))
    reversed_keys = {key: reordered[key] for key in reversed(list(reordered))}
    assert build_report(seed, ENCLAVE) == build_report(reversed_keys, ENCLAVE) == build_report(seed, ENCLAVE)


def test_title_label_sample_marker_whitespace_and_cap(seed):
    sample = normalize(load("camel-sample-tor-client.json"))
    assert build_report(sample, ENCLAVE).title.startswith("[High] [SAMPLE] EC2 instance i-99999999")
    already = dict(sample, title="[SAMPLE] Already marked")
    assert build_report(already, ENCLAVE).title == "[High] [SAMPLE] Already marked"
    looks_like = dict(seed, title="[SAMPLE] but not flagged")
    assert build_report(looks_like, ENCLAVE).title == "[Medium] [SAMPLE] but not flagged"
    messy = dict(seed, title="  lots \n of\t whitespace  ")
    assert build_report(messy, ENCLAVE).title == "[Medium] lots of whitespace"
    untitled = {k: v for k, v in seed.items() if k != "title"}
    assert build_report(untitled, ENCLAVE).title == "[Medium] 99:EC2/Stateless.IntegTest"
    long = build_report(dict(seed, title="word " * 200), ENCLAVE).title
    assert len(long) == TITLE_LIMIT and long.endswith("…")
    critical = normalize(load("eventbridge-attack-sequence-s3.json"))
    assert build_report(critical, ENCLAVE).title.startswith("[Critical] ")


def test_time_began_prefers_first_seen_then_created_at(seed):
    assert build_report(seed, ENCLAVE).time_began == "2017-10-31T23:16:23+00:00"
    no_first_seen = copy.deepcopy(seed)
    del no_first_seen["service"]["eventFirstSeen"]
    assert build_report(no_first_seen, ENCLAVE).time_began == "2017-10-31T23:16:23+00:00"
    no_first_seen["createdAt"] = "2017-10-30T01:02:03.999Z"
    assert build_report(no_first_seen, ENCLAVE).time_began == "2017-10-30T01:02:03+00:00"
    attack = normalize(load("eventbridge-attack-sequence-s3.json"))  # "2025-10-10 10:01:00.000" form
    assert build_report(attack, ENCLAVE).time_began == "2025-10-10T10:01:00+00:00"


def test_body_is_a_summary_then_the_full_sorted_json(seed):
    body = build_report(seed, ENCLAVE).body
    summary, appendix = body.split("\nFull finding (JSON):\n")
    assert json.loads(appendix) == seed
    assert appendix.strip() == json.dumps(seed, indent=2, sort_keys=True, ensure_ascii=False)
    for line in (
        "Severity: 5.0 (Medium)",
        "Account: 123456789012",
        "Region: us-east-1",
        "Partition: aws",
        "Finding ID: 99afba5c5c43e07c9e3e5e2e544e95df",
        "Action type: NETWORK_CONNECTION",
        "  Instance ID: i-05746eb48123455e0",
        "  Tags: Name=ssh-22-open",
        "  Direction: OUTBOUND",
        "  Remote IP: 198.51.100.0",
        "  Remote port: 22",
        "  Security groups: sg-9918a123",
        "  threatListName: GeneratedFindingCustomerListName",
        "Count: 1",
        "Archived: false",
    ):
        assert line in summary.splitlines(), line


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "eventbridge-ec2-port-probe.json",
            ["- Port probe: Local port: 22; Port name: SSH", "Remote IP: 203.0.113.46"],
        ),
        ("eventbridge-ec2-dns-request.json", ["  Domain: c2.bad-actor.example", "  Protocol: UDP"]),
        (
            "pascal-iam-credential-exfiltration.json",
            [
                "  Access key ID: ASIAEXAMPLEKEY7Q2W3E",
                "  API: ListBuckets",
                "  Remote IP: 203.0.113.99",
                "  Country: Examplestan",
            ],
        ),
        (
            "camel-s3-malicious-ip-caller.json",
            [
                "  Name: example-customer-exports",
                "  Public access: NOT_PUBLIC",
                "  Owner: a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
            ],
        ),
        (
            "eventbridge-eks-exec-in-kube-system.json",
            [
                "  Source IPs: 203.0.113.150, 2001:db8:feed::150",
                "  Username: dev-user@example.com",
                "  Verb: create",
                "EKS cluster:",
                "Kubernetes workload:",
            ],
        ),
        (
            "eventbridge-ecs-runtime-crypto-dns.json",
            [
                "  Executable SHA-256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "  Executable path: /tmp/.cache/xmr-helper",
                "  PID: 4242",
                "ECS task:",
            ],
        ),
        (
            "camel-ebs-malware-scan.json",
            [
                "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
                "- Threat: Name: EICAR-Test-File",
                "Files: /home/ec2-user/eicar.com",
            ],
        ),
        (
            "eventbridge-rds-anomalous-login.json",
            ["  DB instance: prod-aurora-1", "- RDS login: User: app_admin", "  Remote IP: 198.51.100.201"],
        ),
        (
            "eventbridge-lambda-c2-activity.json",
            [
                "  Name: payments-webhook",
                "  Version: $LATEST",
                "  Role: arn:aws:iam::123456789012:role/payments-webhook-role",
            ],
        ),
        (
            "eventbridge-attack-sequence-s3.json",
            [
                "- Signal: Name: Exfiltration:S3/AnomalousBehavior",
                "Domain: exfil.attacker.example",
                "Credential: AKIAEXAMPLEKEY4R5T6Y",
                "Values: Discovery, Exfiltration, Impact",
            ],
        ),
    ],
)
def test_summary_sections_per_family(name, expected):
    [(_, candidate)] = [(n, c) for n, c in sample_candidates() if n.startswith(name)]
    summary = summary_of(build_report(normalize(candidate), ENCLAVE))
    for fragment in expected:
        assert fragment in summary, fragment


_INDICATOR_LIKE = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b"  # IPv4
    r"|(?<![\w:])[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])"  # IPv6
    r"|\b(?:[a-z0-9-]+\.)+(?:example|com|net|org|internal)\b"  # domains
    r"|\bA[SK]IA[A-Z0-9]{16}\b"  # access key ids
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail addresses
)


def _strings(value):
    if isinstance(value, dict):
        for element in value.values():
            yield from _strings(element)
    elif isinstance(value, list):
        for element in value:
            yield from _strings(element)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name, candidate", sample_candidates())
def test_every_ip_domain_and_access_key_is_in_the_body(name, candidate):
    finding = normalize(candidate)
    report = build_report(finding, ENCLAVE)
    indicators = {token for text in _strings(finding) for token in _INDICATOR_LIKE.findall(text)}
    assert indicators, "the sample should carry indicators"
    for indicator in indicators:
        assert indicator in report.body
    assert count_indicators(report.body) <= INDICATOR_BUDGET
    assert TRIM_NOTE not in report.body


# --- indicator cap ----------------------------------------------------------------------------------


def _port_probe_finding(probes: int) -> dict:
    event = load("eventbridge-ec2-port-probe.json")
    template = event["detail"]["service"]["action"]["portProbeAction"]["portProbeDetails"][0]
    details = []
    for i in range(probes):
        probe = copy.deepcopy(template)
        probe["remoteIpDetails"]["ipAddressV4"] = f"203.0.{i // 250}.{i % 250}"
        probe["localPortDetails"]["port"] = 1024 + i
        details.append(probe)
    event["detail"]["service"]["action"]["portProbeAction"]["portProbeDetails"] = details
    return normalize(event)


def test_3000_port_probes_are_trimmed_below_the_indicator_cap():
    finding = _port_probe_finding(3000)
    report = build_report(finding, ENCLAVE)
    assert count_indicators(report.body) <= 500
    summary, appendix = report.body.split("\nFull finding (JSON):\n")
    assert f"NOTE: … 2,800 more portProbeDetails entries omitted ({TRIM_NOTE})" in summary
    assert f"  … 2,800 more portProbeDetails entries omitted ({TRIM_NOTE})" in summary.splitlines()
    trimmed = json.loads(appendix)["service"]["action"]["portProbeAction"]["portProbeDetails"]
    assert len(trimmed) == 201 and trimmed[-1].startswith("… 2,800 more")
    assert "203.0.0.0" in summary and "Instance ID: i-0a1b2c3d4e5f60718" in summary
    assert finding["service"]["action"]["portProbeAction"]["portProbeDetails"][2999]  # input untouched
    assert build_report(finding, ENCLAVE) == report


def test_indicators_in_one_long_string_fall_back_to_the_identifying_fields():
    finding = normalize(load("camel-s3-malicious-ip-caller.json"))
    finding["description"] = " ".join(f"198.51.{i // 250}.{i % 250}" for i in range(1500))
    report = build_report(finding, ENCLAVE)
    assert count_indicators(report.body) <= 500
    assert TRIM_NOTE in report.body and "Finding ID: d4f7b0e3a6c9d2f5b8e1a4c7f0d3b6e9" in report.body


def test_a_finding_just_under_the_budget_is_not_trimmed():
    finding = _port_probe_finding(150)
    report = build_report(finding, ENCLAVE)
    assert TRIM_NOTE not in report.body
    assert 150 < count_indicators(report.body) <= INDICATOR_BUDGET


def test_count_indicators_counts_distinct_tokens_of_each_kind():
    text = (
        "ip 192.0.2.1 and again 192.0.2.1, v6 2001:db8::1 and 2001:db8:0:0:0:0:0:2; host www.example.com "
        "mail soc@example.org url https://evil.example.net/x?y=1 md5 d41d8cd98f00b204e9800998ecf8427e "
        "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 sha256 "
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 port 198.51.100.7:443 "
        "time 23:16:23 version 5.0 ratio 0.75"
    )
    # 192.0.2.1, two IPv6, www.example.com, the e-mail, the URL and its host, 3 hashes, 198.51.100.7
    assert count_indicators(text) == 11
    assert count_indicators("nothing to see here: 12:30, 3.5 apples") == 0
    assert count_indicators("loopback ::1 and link-local fe80:: and 'fe80::1'.") == 3


# --- the JSON appendix writer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2.5, -0.0, True, False, None, "x"], "c": {}, "d": [], "e": {"z": {"y": [[]]}}},
        {"unicode": 'ümlaut ✓ \u2028 \x00 "quoted" \\ back', "big": 10**20, "small": 1e-7},
        [],
        {},
        "text",
        5,
        [{"k": "v"}, [1, [2, [3]]]],
        {"nan": float("nan")},
        {"set": {1}},
        {1: "int key"},
    ],
)
def test_to_json_is_exactly_the_stdlib_indent_2_sort_keys_output(value):
    try:
        expected = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except TypeError:
        pytest.skip("not JSON")
    assert to_json(value) == expected


@pytest.mark.parametrize("name, candidate", sample_candidates())
def test_to_json_matches_the_stdlib_on_every_sample(name, candidate):
    finding = normalize(candidate)
    assert to_json(finding) == json.dumps(finding, indent=2, sort_keys=True, ensure_ascii=False)


# --- defensive mapping --------------------------------------------------------------------------------


def test_odd_shapes_never_crash_the_mapper():
    odd = {
        "id": "odd",
        "type": "T",
        "severity": 7.5,
        "accountId": "1",
        "region": "r",
        "resource": {
            "instanceDetails": "text",
            "s3BucketDetails": [None, 5, {"name": ["a", "b"]}],
            "accessKeyDetails": {"accessKeyId": {"nested": "198.51.100.3"}},
        },
        "service": {
            "action": [1, 2],
            "additionalInfo": ["x"],
            "eventFirstSeen": 12,
            "detection": {"sequence": {"signals": "none", "actors": [{"user": "bob"}]}},
        },
    }
    report = build_report(odd, ENCLAVE)
    assert report.title == "[High] T" and report.time_began == ""
    assert v13_payload(report)["timeBegan"] is None
    assert "198.51.100.3" in report.body and "  Name: a, b" in report.body
    assert build_report({}, ENCLAVE).title == "[Low] GuardDuty finding"
