"""The GuardDuty emulator, exercised with real, unmodified boto3 over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.sims.guardduty import DETECTOR_NOT_OWNED, GuardDutyEmulator, make_finding, to_eventbridge

ROOT = Path(__file__).resolve().parents[1]
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@pytest.fixture
def emu():
    with GuardDutyEmulator() as e:
        yield e


def client(emu, region="us-east-1", **config):
    return boto3.client(
        "guardduty",
        region_name=region,
        endpoint_url=emu.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**config) if config else None,
    )


def list_all(gd, detector_id, **kwargs):
    ids, token, pages = [], None, 0
    while True:
        extra = {"NextToken": token} if token else {}
        resp = gd.list_findings(DetectorId=detector_id, MaxResults=50, **kwargs, **extra)
        ids += resp["FindingIds"]
        pages += 1
        token = resp.get("NextToken")
        if not token:
            return ids, pages


def code_of(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


# ---------------------------------------------------------------------------------------------------------
def test_routes_come_from_botocore_model(emu):
    from tests.sims.guardduty import _model, _routes

    ops = {name for _, _, name in _routes()}
    assert ops == set(_model()["operations"])
    assert emu.url.startswith("http://127.0.0.1:")


def test_list_detectors_isolated_per_region(emu):
    east = emu.add_detector("us-east-1")
    west = emu.add_detector("eu-west-1", "d" * 32)
    assert client(emu, "us-east-1").list_detectors()["DetectorIds"] == [east]
    assert client(emu, "eu-west-1").list_detectors()["DetectorIds"] == ["d" * 32]
    assert client(emu, "ap-south-1").list_detectors()["DetectorIds"] == []
    assert west == "d" * 32
    assert [c.region for c in emu.calls] == ["us-east-1", "eu-west-1", "ap-south-1"]
    assert emu.count("ListDetectors") == 3 and emu.count(region="eu-west-1") == 1

    # findings are per region too
    emu.add_findings("us-east-1", east, [make_finding(1)])
    with pytest.raises(ClientError) as ei:
        client(emu, "eu-west-1").list_findings(DetectorId=east)
    assert code_of(ei) == "BadRequestException"
    assert ei.value.response["Error"]["Message"] == DETECTOR_NOT_OWNED
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_list_detectors_pagination(emu):
    ids = [emu.add_detector("us-east-1") for _ in range(7)]
    gd = client(emu)
    pages = list(gd.get_paginator("list_detectors").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["DetectorIds"]) for p in pages] == [3, 3, 1]
    assert [d for p in pages for d in p["DetectorIds"]] == ids
    assert emu.calls[0].query == {"maxResults": "3"}


def test_list_findings_paginates_every_id_once(emu):
    det = emu.add_detector("us-east-1")
    findings = [make_finding(i, detector_id=det) for i in range(237)]
    emu.add_findings("us-east-1", det, findings)
    ids, pages = list_all(client(emu), det)
    assert pages == 5
    assert len(ids) == len(set(ids)) == 237
    assert ids == [f["id"] for f in findings]  # default order: insertion
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # boto3's own paginator agrees
    pag = client(emu).get_paginator("list_findings").paginate(DetectorId=det)
    assert [i for p in pag for i in p["FindingIds"]] == ids
    # the token pins a snapshot: adding findings between pages does not shift or duplicate
    gd = client(emu)
    first = gd.list_findings(DetectorId=det, MaxResults=50)
    emu.add_findings("us-east-1", det, [make_finding(10_000 + i, detector_id=det) for i in range(5)])
    second = gd.list_findings(DetectorId=det, MaxResults=50, NextToken=first["NextToken"])
    assert second["FindingIds"] == ids[50:100]
    with pytest.raises(ClientError) as ei:
        gd.list_findings(DetectorId=det, NextToken="not-a-token")
    assert code_of(ei) == "BadRequestException"


def test_criterion_operators(emu):
    det = emu.add_detector("us-east-1")
    fs = []
    for i in range(40):
        fs.append(
            make_finding(
                i,
                detector_id=det,
                severity=[2.0, 5.0, 8.0, 9.5][i % 4],
                type="Recon:EC2/PortProbeUnprotectedPort" if i % 3 else "Backdoor:EC2/C&CActivity.B",
                updated_at=BASE + timedelta(hours=i),
                archived=i % 5 == 0,
                account_id="111111111111" if i < 10 else "222222222222",
            )
        )
    emu.add_findings("us-east-1", det, fs)
    gd = client(emu)

    def ids(criterion, **kw):
        return list_all(gd, det, FindingCriteria={"Criterion": criterion}, **kw)[0]

    def expect(pred):
        return [f["id"] for f in fs if pred(f)]

    assert ids({"severity": {"GreaterThanOrEqual": 7}}) == expect(lambda f: f["severity"] >= 7)
    assert ids({"severity": {"Gte": 7}}) == expect(lambda f: f["severity"] >= 7)
    assert ids({"severity": {"LessThan": 5}}) == expect(lambda f: f["severity"] < 5)
    assert ids({"severity": {"Equals": ["8"]}}) == expect(lambda f: f["severity"] == 8.0)
    assert ids({"type": {"Equals": ["Backdoor:EC2/C&CActivity.B"]}}) == expect(
        lambda f: f["type"].startswith("Backdoor")
    )
    assert ids({"type": {"NotEquals": ["Backdoor:EC2/C&CActivity.B"]}}) == expect(
        lambda f: f["type"].startswith("Recon")
    )
    lo, hi = BASE + timedelta(hours=10), BASE + timedelta(hours=20)
    assert ids({"updatedAt": {"GreaterThanOrEqual": ms(lo), "LessThan": ms(hi)}}) == [
        f["id"] for f in fs[10:20]
    ]
    assert ids({"updatedAt": {"GreaterThan": ms(lo)}}) == [f["id"] for f in fs[11:]]
    assert ids({"createdAt": {"LessThanOrEqual": ms(BASE)}}) == [f["id"] for f in fs[:2]]
    assert ids({"service.archived": {"Equals": ["false"]}}) == expect(lambda f: not f["service"]["archived"])
    assert ids({"service.archived": {"Equals": ["true"]}}) == expect(lambda f: f["service"]["archived"])
    assert ids({"accountId": {"Equals": ["111111111111"]}}) == [f["id"] for f in fs[:10]]
    assert ids({"accountId": {"Neq": ["111111111111"]}}) == [f["id"] for f in fs[10:]]
    assert ids({"id": {"Equals": [fs[3]["id"], fs[7]["id"]]}}) == [fs[3]["id"], fs[7]["id"]]
    assert ids({"region": {"Equals": ["us-east-1"]}}) == expect(lambda f: True)
    assert ids({"resource.resourceType": {"Equals": ["Instance"]}}) == expect(lambda f: True)
    assert ids({"resource.resourceType": {"Equals": ["S3Bucket"]}}) == []
    # generic dotted path, through lists
    ip = fs[4]["resource"]["instanceDetails"]["networkInterfaces"][0]["publicIp"]
    assert fs[4]["id"] in ids({"resource.instanceDetails.networkInterfaces.publicIp": {"Equals": [ip]}})
    assert ids(
        {"service.additionalInfo.domain": {"Equals": [fs[6]["service"]["additionalInfo"]["domain"]]}}
    ) == [fs[6]["id"]]
    # conditions are ANDed
    both = {"severity": {"GreaterThanOrEqual": 7}, "service.archived": {"Equals": ["false"]}}
    assert ids(both) == expect(lambda f: f["severity"] >= 7 and not f["service"]["archived"])
    # the wire form the emulator received: map keys verbatim, operators camelCase
    body = emu.calls[-1].body
    assert body["findingCriteria"]["criterion"]["service.archived"] == {"equals": ["false"]}
    # sort criteria
    desc = ids({}, SortCriteria={"AttributeName": "updatedAt", "OrderBy": "DESC"})
    assert desc == [f["id"] for f in reversed(fs)]
    by_sev = ids({}, SortCriteria={"AttributeName": "severity", "OrderBy": "ASC"})
    assert [f["severity"] for f in emu.findings("us-east-1", det) if f["id"] in by_sev[:10]] == [2.0] * 10


def test_limits_are_enforced_server_side(emu):
    det = emu.add_detector("us-east-1")
    emu.add_findings("us-east-1", det, [make_finding(i) for i in range(60)])
    gd = client(emu)
    with pytest.raises(ClientError) as ei:
        gd.list_findings(DetectorId=det, MaxResults=51)
    assert code_of(ei) == "BadRequestException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as ei:
        gd.list_detectors(MaxResults=51)
    assert code_of(ei) == "BadRequestException"
    ids = gd.list_findings(DetectorId=det)["FindingIds"]
    assert len(ids) == 50  # default page size
    all_ids = [f["id"] for f in emu.findings("us-east-1", det)]
    with pytest.raises(ClientError) as ei:
        gd.get_findings(DetectorId=det, FindingIds=all_ids[:51])
    assert code_of(ei) == "BadRequestException"
    assert len(gd.get_findings(DetectorId=det, FindingIds=all_ids[:50])["Findings"]) == 50
    assert [c.status for c in emu.calls] == [400, 400, 200, 400, 200]


def test_get_findings_wire_form(emu):
    det = emu.add_detector("us-east-1")
    f = make_finding(3, detector_id=det, severity=8, type="Backdoor:EC2/C&CActivity.B")
    f["resource"]["eksClusterDetails"] = {"name": "c", "createdAt": "2024-02-03T04:05:06.789Z"}
    emu.add_findings("us-east-1", det, [f, make_finding(4, detector_id=det)])
    event = to_eventbridge(f)
    assert (
        event["detail"] == f
        and event["detail-type"] == "GuardDuty Finding"
        and event["source"] == "aws.guardduty"
    )
    assert event["account"] == "123456789012" and event["region"] == "us-east-1" and event["resources"] == []

    got = client(emu).get_findings(DetectorId=det, FindingIds=[f["id"], "0" * 32])["Findings"]
    assert len(got) == 1  # unknown id silently omitted
    g = got[0]
    assert g["Id"] == f["id"] and g["AccountId"] == "123456789012" and g["Type"] == f["type"]
    assert g["Severity"] == 8.0 and isinstance(g["Severity"], float)
    assert g["CreatedAt"] == f["createdAt"] and g["UpdatedAt"] == f["updatedAt"]
    assert g["UpdatedAt"].endswith("Z") and "." in g["UpdatedAt"]
    info = g["Service"]["AdditionalInfo"]
    assert set(info) == {"Value", "Type"} and info["Type"] == "default"
    assert json.loads(info["Value"]) == f["service"]["additionalInfo"]
    assert (
        g["Service"]["Archived"] is False and g["Service"]["EventFirstSeen"] == f["service"]["eventFirstSeen"]
    )
    action = g["Service"]["Action"]
    assert action["ActionType"] == "NETWORK_CONNECTION"
    remote = action["NetworkConnectionAction"]["RemoteIpDetails"]["IpAddressV4"]
    assert remote.startswith("198.51.100.")
    inst = g["Resource"]["InstanceDetails"]
    assert isinstance(f["resource"]["instanceDetails"]["launchTime"], int)  # EventBridge: epoch ms
    launch = datetime.fromisoformat(inst["LaunchTime"].replace("Z", "+00:00"))
    assert ms(launch) == f["resource"]["instanceDetails"]["launchTime"]
    assert inst["NetworkInterfaces"][0]["PublicIp"].startswith("203.0.113.")
    eks_created = g["Resource"]["EksClusterDetails"]["CreatedAt"]  # a `timestamp` shape -> datetime
    assert isinstance(eks_created, datetime)
    assert eks_created == datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    # the stored canonical finding is untouched
    assert emu.findings("us-east-1", det)[0] == f


def test_throttling_is_retried_by_standard_mode(emu):
    # botocore's own classifier and back-off, unpatched: few throttles keep its jittered sleeps short
    det = emu.add_detector("us-east-1")
    emu.add_findings("us-east-1", det, [make_finding(1)])
    gd = client(emu, retries={"mode": "standard", "max_attempts": 5})
    emu.throttle_next(2)
    resp = gd.list_findings(DetectorId=det)
    assert resp["FindingIds"] == [make_finding(1)["id"]]
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    assert emu.count("ListFindings") == 3
    assert [c.status for c in emu.calls] == [429, 429, 200]
    assert [c.error_code for c in emu.calls][:2] == ["ThrottlingException"] * 2
    # 500s are retried as transient errors, too
    emu.fail_next(1)
    assert gd.list_detectors()["ResponseMetadata"]["RetryAttempts"] == 1
    assert [c.status for c in emu.calls[3:]] == [500, 200]
    # exhausting attempts surfaces the throttling error
    one_retry = client(emu, retries={"mode": "standard", "max_attempts": 1})
    emu.throttle_next(10, code="TooManyRequestsException")
    with pytest.raises(ClientError) as ei:
        one_retry.list_detectors()
    assert code_of(ei) == "TooManyRequestsException"
    assert ei.value.response["Error"]["Message"] == "Rate exceeded"
    assert emu.calls[-1].status == 429


def test_deny(emu):
    det = emu.add_detector("us-east-1")
    emu.add_detector("eu-west-1")
    emu.deny("us-east-1")
    with pytest.raises(ClientError) as ei:
        client(emu).list_findings(DetectorId=det)
    assert code_of(ei) == "AccessDeniedException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(client(emu, "eu-west-1").list_detectors()["DetectorIds"]) == 1
    emu.deny()
    with pytest.raises(ClientError) as ei:
        client(emu, "eu-west-1").list_detectors()
    assert code_of(ei) == "AccessDeniedException"
    assert [c.status for c in emu.calls] == [403, 200, 403]


def test_statistics_sample_and_archive(emu):
    det = emu.add_detector("us-east-1")
    sev = [2.0, 5.0, 5.0, 8.0, 8.0, 8.0]
    fs = [make_finding(i, detector_id=det, severity=s, archived=i == 0) for i, s in enumerate(sev)]
    emu.add_findings("us-east-1", det, fs)
    gd = client(emu)
    stats = gd.get_findings_statistics(DetectorId=det, FindingStatisticTypes=["COUNT_BY_SEVERITY"])
    assert stats["FindingStatistics"]["CountBySeverity"] == {"2.0": 1, "5.0": 2, "8.0": 3}
    stats = gd.get_findings_statistics(
        DetectorId=det,
        FindingStatisticTypes=["COUNT_BY_SEVERITY"],
        FindingCriteria={"Criterion": {"service.archived": {"Equals": ["false"]}}},
    )
    assert stats["FindingStatistics"]["CountBySeverity"] == {"5.0": 2, "8.0": 3}
    grouped = gd.get_findings_statistics(DetectorId=det, GroupBy="SEVERITY")["FindingStatistics"]
    assert [(g["Severity"], g["TotalFindings"]) for g in grouped["GroupedBySeverity"]] == [
        (8.0, 3),
        (5.0, 2),
        (2.0, 1),
    ]
    assert isinstance(grouped["GroupedBySeverity"][0]["LastGeneratedAt"], datetime)
    by_type = gd.get_findings_statistics(DetectorId=det, GroupBy="FINDING_TYPE")["FindingStatistics"]
    assert by_type["GroupedByFindingType"][0]["TotalFindings"] == 6

    gd.create_sample_findings(
        DetectorId=det, FindingTypes=["Backdoor:EC2/C&CActivity.B", "Trojan:EC2/DNSDataExfiltration"]
    )
    samples = [f for f in emu.findings("us-east-1", det) if f["service"]["additionalInfo"].get("sample")]
    assert sorted(f["type"] for f in samples) == [
        "Backdoor:EC2/C&CActivity.B",
        "Trojan:EC2/DNSDataExfiltration",
    ]
    assert all(f["title"].startswith("[SAMPLE]") and f["service"]["detectorId"] == det for f in samples)

    before = emu.findings("us-east-1", det)[1]["updatedAt"]
    gd.archive_findings(DetectorId=det, FindingIds=[fs[1]["id"]])
    after = emu.findings("us-east-1", det)[1]
    assert after["service"]["archived"] is True and after["updatedAt"] > before
    active = list_all(gd, det, FindingCriteria={"Criterion": {"service.archived": {"Equals": ["false"]}}})[0]
    assert fs[0]["id"] not in active and fs[1]["id"] not in active and len(active) == 6


def test_unknown_route_is_404_json(emu):
    gd = client(emu)
    with pytest.raises(ClientError) as ei:
        gd.list_members(DetectorId="x")
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert emu.calls[-1].operation == "ListMembers"
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(emu.url + "/nowhere")
    assert he.value.code == 404 and "message" in json.loads(he.value.read())


def test_endpoint_from_environment_variable(emu):
    det = emu.add_detector("eu-central-1")
    emu.add_findings("eu-central-1", det, [make_finding(i, region="eu-central-1") for i in range(3)])
    script = (
        "import boto3, json\n"
        "gd = boto3.client('guardduty', region_name='eu-central-1')\n"
        "d = gd.list_detectors()['DetectorIds'][0]\n"
        "print(json.dumps([d, gd.list_findings(DetectorId=d)['FindingIds']]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_ENDPOINT_URL_GUARDDUTY": emu.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    got_det, got_ids = json.loads(out.stdout)
    assert got_det == det and len(got_ids) == 3
    assert emu.count(region="eu-central-1") == 2


def test_endpoint_from_environment_in_process(emu, monkeypatch):
    det = emu.add_detector("us-west-2")
    monkeypatch.setenv("AWS_ENDPOINT_URL_GUARDDUTY", emu.url)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    gd = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-west-2"
    ).client("guardduty")
    assert gd.list_detectors()["DetectorIds"] == [det]


def test_make_finding_is_deterministic():
    a, b = make_finding(7), make_finding(7)
    assert a == b and a["id"] != make_finding(8)["id"]
    assert len(a["id"]) == 32
    assert a["createdAt"].endswith("Z") and len(a["createdAt"]) == len("2024-01-01T00:00:00.000Z")
    assert a["service"]["count"] >= 1 and a["service"]["archived"] is False
    assert make_finding(7, archived=True)["service"]["archived"] is True
    assert make_finding(7, sample=True)["service"]["additionalInfo"]["sample"] is True
    nc = make_finding(7, type="UnauthorizedAccess:EC2/TorClient")
    assert nc["service"]["action"]["actionType"] == "NETWORK_CONNECTION"
    assert a["service"]["action"]["actionType"] == "PORT_PROBE"
