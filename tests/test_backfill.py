"""`gdtrustar backfill` end to end: real boto3 → GuardDuty emulator, real SDK → Station sim."""

from __future__ import annotations

import base64
import json
import math
import signal
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import write_jsonl
from tests.sims.guardduty import GuardDutyEmulator, make_finding, to_eventbridge


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


NOW = datetime.now(timezone.utc)


@pytest.fixture
def gd():
    with GuardDutyEmulator() as emulator:
        yield emulator


@pytest.fixture
def bf(cli, gd, sim):
    cli.station(sim)
    cli.env["AWS_ENDPOINT_URL_GUARDDUTY"] = gd.url
    return cli


def seed(gd, region, n, start=0, **kwargs):
    det = kwargs.pop("detector", None) or gd.add_detector(region)
    findings = [make_finding(i, region=region, detector_id=det, **kwargs) for i in range(start, start + n)]
    gd.add_findings(region, det, findings)
    return det, findings


def ext(fid, enclave="enc-a"):
    return base64.b64encode(f"{enclave}|{fid}".encode()).decode()


def test_backfill_two_regions_several_detectors_within_call_bounds(bf, gd, sim):
    det1, f1 = seed(gd, "us-east-1", 120)
    det2, f2 = seed(gd, "us-east-1", 7, start=1000)
    det3, f3 = seed(gd, "eu-west-1", 51, start=2000)
    result = bf("backfill", "--region", "us-east-1", "--region", "eu-west-1", "--json")
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 178}
    by_ext = sim.reports_by_external_id()
    for f in f1 + f2 + f3:
        assert len(by_ext[("enc-a", ext(f["id"]))]) == 1
    for det, n in ((det1, 120), (det2, 7), (det3, 51)):
        lists = [c for c in gd.calls if c.operation == "ListFindings" and c.detector_id == det]
        gets = [c for c in gd.calls if c.operation == "GetFindings" and c.detector_id == det]
        assert len(lists) <= math.ceil(n / 50)
        assert len(gets) <= math.ceil(n / 50)
        assert all(c.body.get("maxResults") == 50 for c in lists)
    assert sim.count("upsert") == 178


def test_second_run_writes_nothing(bf, gd, sim):
    seed(gd, "us-east-1", 60)
    assert bf("backfill", "--region", "us-east-1").code == 0
    writes = sim.count("upsert")
    again = bf("backfill", "--region", "us-east-1", "--json")
    assert again.code == 0
    assert sim.count("upsert") == writes
    assert "created" not in again.actions() and "updated" not in again.actions()


def test_rerun_after_update_sends_only_the_changed_finding(bf, gd, sim):
    det, findings = seed(gd, "us-east-1", 20)
    assert bf("backfill", "--region", "us-east-1").code == 0
    changed = dict(findings[4])
    changed["updatedAt"] = iso(NOW + timedelta(minutes=5))
    changed["title"] = "escalated"
    gd.add_findings("us-east-1", det, [changed])
    result = bf("backfill", "--region", "us-east-1", "--json")
    assert result.code == 0
    assert result.actions().get("updated") == 1
    assert result.actions().get("created", 0) == 0
    assert len(sim.reports_by_external_id()[("enc-a", ext(changed["id"]))]) == 1


def _ids(result):
    return {r["finding_id"] for r in result.records}


def test_filters_select_exactly_the_expected_findings(bf, gd):
    region = "us-east-1"
    det = gd.add_detector(region)
    old = NOW - timedelta(days=20)
    rows = [
        make_finding(1, region=region, detector_id=det, severity=2.0, updated_at=iso(old)),
        make_finding(2, region=region, detector_id=det, severity=5.0, updated_at=iso(NOW - timedelta(days=2))),
        make_finding(3, region=region, detector_id=det, severity=8.0,
                     type="UnauthorizedAccess:IAMUser/MaliciousIPCaller", updated_at=iso(NOW - timedelta(hours=1))),
        make_finding(4, region=region, detector_id=det, severity=9.5, archived=True,
                     updated_at=iso(NOW - timedelta(hours=2))),
        make_finding(5, region=region, detector_id=det, severity=7.0, account_id="210987654321",
                     updated_at=iso(NOW - timedelta(hours=3))),
    ]
    gd.add_findings(region, det, rows)
    ids = {i: r["id"] for i, r in enumerate(rows, 1)}

    def run(*flags):
        result = bf("backfill", "--region", region, "--dry-run", "--json", *flags)
        assert result.code == 0, result.stderr
        return _ids(result)

    assert run() == {ids[1], ids[2], ids[3], ids[5]}
    assert run("--since", "7d") == {ids[2], ids[3], ids[5]}
    assert run("--until", iso(NOW - timedelta(days=1))) == {ids[1], ids[2]}
    assert run("--min-severity", "high") == {ids[3], ids[5]}
    assert run("--min-severity", "5") == {ids[2], ids[3], ids[5]}
    assert run("--type", "UnauthorizedAccess:IAMUser/MaliciousIPCaller") == {ids[3]}
    assert run("--account", "210987654321") == {ids[5]}
    assert run("--include-archived", "--min-severity", "critical") == {ids[4]}
    criteria = [c.body["findingCriteria"]["criterion"] for c in gd.calls if c.operation == "ListFindings"]
    assert {"greaterThanOrEqual": 7} in [c.get("severity") for c in criteria]  # filtered server side


def test_dry_run_table_by_severity_and_type(bf, gd, sim):
    seed(gd, "us-east-1", 12)
    result = bf("backfill", "--region", "us-east-1", "--dry-run")
    assert result.code == 0, result.stderr
    assert "By severity and type" in result.stdout
    assert "Recon:EC2/PortProbeUnprotectedPort" in result.stdout
    assert sim.count("upsert") == 0


def test_throttling_is_ridden_out(bf, gd, sim):
    seed(gd, "us-east-1", 75)
    gd.throttle_next(3)
    result = bf("backfill", "--region", "us-east-1", "--json")
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 75}
    assert sum(1 for c in gd.calls if c.status == 429) == 3


def test_access_denied_is_one_line_exit_2(bf, gd):
    seed(gd, "us-east-1", 3)
    gd.deny()
    result = bf("backfill", "--region", "us-east-1")
    assert result.code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "AccessDenied" in result.stderr


def test_unknown_detector_is_exit_2(bf, gd):
    seed(gd, "us-east-1", 3)
    result = bf("backfill", "--region", "us-east-1", "--detector", "nope")
    assert result.code == 2
    assert "nope" in result.stderr or "detector" in result.stderr.lower()


def test_api_and_eventbridge_produce_the_same_reports(bf, gd, tmp_path):
    det, findings = seed(gd, "us-east-1", 15)
    api = bf("backfill", "--region", "us-east-1", "--dry-run", "--json", "--enclave-id", "enc-a")
    path = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(f) for f in findings])
    files = bf("send", "--dry-run", "--json", "--enclave-id", "enc-a", str(path))
    assert api.code == files.code == 0
    by_id_api = {r["finding_id"]: r["report"] for r in api.records}
    by_id_files = {r["finding_id"]: r["report"] for r in files.records}
    assert by_id_api == by_id_files
    assert len(by_id_api) == 15


def test_ctrl_c_finishes_in_flight_and_exits_130(bf, gd, sim, tmp_path):
    seed(gd, "us-east-1", 300)
    failures = tmp_path / "failures.jsonl"
    holder = {}
    # Ctrl-C from inside Station the moment the 31st write arrives (SIGKILL + resume: test_fault_storms)
    sim.after(30, "upsert", lambda: holder["proc"].send_signal(signal.SIGINT))
    holder["proc"] = proc = bf.popen("backfill", "--region", "us-east-1", "--json", "--failures", str(failures))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    records = [json.loads(x) for x in out.decode().split("\n") if x]
    created = {r["finding_id"] for r in records if r["action"] == "created"}
    assert 30 <= len(created) < 300
    # every write that was in flight finished and was reported; nothing was written twice
    by_ext = sim.reports_by_external_id()
    assert all(len(v) == 1 for v in by_ext.values())
    assert created == {base64.b64decode(k[1]).decode().split("|", 1)[1] for k in by_ext}
    assert failures.exists()
    rerun = bf("backfill", "--region", "us-east-1", "--json")
    assert rerun.actions().get("created") == 300 - len(created)


def _since_in_last_listing(gd):
    listing = [c for c in gd.calls if c.operation == "ListFindings"][-1]
    return listing.body["findingCriteria"]["criterion"].get("updatedAt", {}).get("greaterThanOrEqual")


def test_bookmark_narrows_the_next_listing_but_never_past_a_failure(bf, gd, sim):
    det = gd.add_detector("us-east-1")
    stamps = [iso(NOW - timedelta(hours=5, minutes=i)) for i in range(30)]
    gd.add_findings("us-east-1", det, [make_finding(i, detector_id=det, updated_at=stamps[i]) for i in range(30)])
    sim.fail_next(1000, 503, kinds={"upsert"})
    first = bf("backfill", "--region", "us-east-1", env={"GDTRUSTAR_RETRY_ATTEMPTS": "1"})
    assert first.code == 1
    sim.clear_faults()
    second = bf("backfill", "--region", "us-east-1", "--json")
    assert _since_in_last_listing(gd) is None  # the failed run left no bookmark
    assert second.actions() == {"created": 30}
    third = bf("backfill", "--region", "us-east-1", "--json")
    newest_ms = int(datetime.fromisoformat(max(stamps).replace("Z", "+00:00")).timestamp() * 1000)
    assert _since_in_last_listing(gd) == newest_ms
    assert third.actions() == {"unchanged": 1}  # only the finding at the bookmark itself is re-read
    bf("backfill", "--region", "us-east-1", "--force", "--json")
    assert _since_in_last_listing(gd) is None


def test_all_regions_asks_ec2_for_the_enabled_regions(bf, gd, sim):
    from moto.server import ThreadedMotoServer

    seed(gd, "eu-west-1", 3, start=3000)
    seed(gd, "ap-southeast-2", 2, start=4000)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        result = bf("backfill", "--all-regions", "--dry-run", "--json",
                    env={"AWS_ENDPOINT_URL_EC2": f"http://{host}:{port}"})
    finally:
        server.stop()
    assert result.code == 0, result.stderr
    assert len(result.records) == 5
    listed_regions = {c.region for c in gd.calls if c.operation == "ListDetectors"}
    assert {"eu-west-1", "ap-southeast-2", "us-east-1"} <= listed_regions


def test_no_detector_is_one_line_exit_2(bf, gd):
    result = bf("backfill", "--region", "sa-east-1")
    assert result.code == 2
    assert "no GuardDuty detector in sa-east-1" in result.stderr
