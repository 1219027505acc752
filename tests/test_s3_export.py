"""`gdtrustar send s3://...`: moto (S3 + KMS) in server mode behind a counting proxy, the Station simulator.

The bucket is laid out as GuardDuty writes it (tests/sims/export_bucket.py). The proxy
(tests/sims/s3proxy.py) counts ListObjectsV2 / GetObject calls and serves what moto cannot model:
moto never consults KMS when it reads an SSE-KMS object, so a KMS refusal is S3's real XML error
body (AccessDenied naming kms:Decrypt, or a KMS.* code) served by the proxy and parsed by
botocore into a real ClientError.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from tests.sims.export_bucket import ExportBucket
from tests.sims.guardduty import make_finding
from tests.sims.s3proxy import S3Proxy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ACCOUNTS = ("111122223333", "444455556666")
REGIONS = ("us-east-1", "eu-west-1")
DAYS = (date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3), date(2024, 5, 6))
KMS_DENIED = ("User: arn:aws:iam::111122223333:user/reader is not authorized to perform: kms:Decrypt on resource: "
              "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab because no "
              "identity-based policy allows the kms:Decrypt action")


@pytest.fixture
def proxy(moto_url):
    with S3Proxy(moto_url) as p:
        yield p


@pytest.fixture
def export(moto_url):
    return ExportBucket(moto_url, f"gd-export-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3cli(cli, proxy):
    cli.env["AWS_ENDPOINT_URL_S3"] = proxy.url
    return cli


def at(day: date, hour: int = 12, minute: int = 0) -> str:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")


def seed_layout(export: ExportBucket) -> dict:
    """Several accounts, regions and days; objects of 1-50 findings. Returns {finding id: (account, region, day)}."""
    where, i = {}, 0
    sizes = iter([1, 50, 7, 3, 12, 1, 25, 2, 9, 4, 1, 30, 6, 2, 8, 5])
    for account in ACCOUNTS:
        for region in REGIONS:
            for day in DAYS[:2] if account == ACCOUNTS[1] else DAYS:
                n = next(sizes, 3)
                findings = [make_finding(i + j, account_id=account, region=region, updated_at=at(day, 1 + j % 20))
                            for j in range(n)]
                export.put(findings, account, region, day)
                where.update({f["id"]: (account, region, day) for f in findings})
                i += n
    return where


def ids(result) -> set:
    return {r["finding_id"] for r in result.records}


def ext(fid: str, enclave: str = "enc-a") -> str:
    return base64.b64encode(f"{enclave}|{fid}".encode()).decode()


# -- listing ---------------------------------------------------------------------------------------------------


def test_prefix_may_point_anywhere_in_the_tree(s3cli, proxy, export):
    where = seed_layout(export)
    export.put([make_finding(9000, account_id="999988887777")], "999988887777", "us-east-1", DAYS[0])
    export.s3.put_object(Bucket=export.bucket, Key="AWSLogs/111122223333/CloudTrail/us-east-1/2024/05/01/t.json.gz",
                         Body=b"not ours")
    a, r, d = ACCOUNTS[0], REGIONS[1], DAYS[1]
    one = next(k for k in export.keys if k.startswith(export.folder(a, r, d)))
    cases = {
        "": set(where) | {make_finding(9000)["id"]},
        "AWSLogs/": set(where) | {make_finding(9000)["id"]},
        f"AWSLogs/{a}": {f for f, w in where.items() if w[0] == a},
        f"AWSLogs/{a}/GuardDuty/{r}/": {f for f, w in where.items() if w[:2] == (a, r)},
        f"AWSLogs/{a}/GuardDuty/{r}/2024/05/": {f for f, w in where.items() if w[:2] == (a, r)},
        export.folder(a, r, d): {f for f, w in where.items() if w == (a, r, d)},
        one: {f for f, w in where.items() if w == (a, r, d)},
    }
    for path, expected in cases.items():
        result = s3cli("send", "--dry-run", "--json", export.url(path))
        assert result.code == 0, (path, result.stderr)
        assert ids(result) == expected, path
        assert len(result.records) == len(expected), path  # each finding once
    # the CloudTrail sibling was never even listed: the walk appends GuardDuty/ below each account
    assert not any("CloudTrail" in c.query.get("prefix", [""])[0] for c in proxy.calls)


def test_custom_prefix_and_organisation_segment(s3cli, moto_url):
    export = ExportBucket(moto_url, f"gd-org-{uuid.uuid4().hex[:8]}", prefix="security/guardduty", org="o-a1b2c3d4e5")
    findings = [make_finding(i, account_id=ACCOUNTS[i % 2]) for i in range(6)]
    export.put(findings[:3], ACCOUNTS[0])
    export.put(findings[3:], ACCOUNTS[1], "eu-west-1")
    for path in ("security/guardduty", "security/guardduty/AWSLogs/o-a1b2c3d4e5/",
                 f"security/guardduty/AWSLogs/o-a1b2c3d4e5/{ACCOUNTS[1]}/GuardDuty/"):
        result = s3cli("send", "--dry-run", "--json", export.url(path))
        assert result.code == 0, result.stderr
        wanted = findings if "GuardDuty" not in path else findings[3:]
        assert ids(result) == {f["id"] for f in wanted}, path


def test_window_lists_only_the_day_folders_it_can_need(s3cli, proxy, export):
    where = seed_layout(export)
    since, until = at(DAYS[1], 0), at(DAYS[1], 23, 59)
    result = s3cli("send", "--dry-run", "--json", "--since", since, "--until", until, export.url())
    assert result.code == 0, result.stderr
    assert ids(result) == {f for f, w in where.items() if w[2] == DAYS[1]}
    listed = {c.query["prefix"][0] for c in proxy.calls
              if c.op == "ListObjectsV2" and "delimiter" not in c.query and "max-keys" not in c.query}  # not the check
    read = {c.key for c in proxy.calls if c.op == "GetObject"}
    # whole day folders only, the window's day and one day of margin each side; never the 6th
    assert listed and all(p.endswith(("/2024/05/01/", "/2024/05/02/", "/2024/05/03/")) for p in listed), listed
    assert not any("/2024/05/06/" in k for k in read)
    assert len(read) == sum(1 for k in export.keys if "/2024/05/0" in k and not k.count("/2024/05/06/"))
    assert "findings outside the filters" in result.stderr  # the margin days' findings, left out by updatedAt


def test_filters_as_in_backfill_region_account_type_severity(s3cli, proxy, export):
    where = seed_layout(export)
    result = s3cli("send", "--dry-run", "--json", "--region", REGIONS[1], "--account", ACCOUNTS[1], export.url())
    assert ids(result) == {f for f, w in where.items() if w[:2] == (ACCOUNTS[1], REGIONS[1])}
    read = {c.key for c in proxy.calls if c.op == "GetObject"}
    assert read and all(f"/GuardDuty/{REGIONS[1]}/" in k for k in read)  # --region prunes folders
    assert s3cli("send", "--dry-run", "--json", "--type", "Nope:EC2/X", export.url()).records == []
    high = s3cli("send", "--dry-run", "--json", "--min-severity", "high", export.url())
    assert high.code == 0 and high.records == []  # make_finding's severity is 5.0


def test_dry_run_table_summary_and_origins(s3cli, export):
    export.put([make_finding(i) for i in range(3)], name="a.jsonl.gz")
    table = s3cli("send", "--dry-run", export.url())
    assert table.code == 0, table.stderr
    assert "would be sent" in table.stdout
    assert "s3: 1 objects listed, 1 read, 0 skipped" in table.stderr
    records = s3cli("send", "--dry-run", "--json", export.url()).records
    assert [r["origin"] for r in records] == [f"s3://{export.bucket}/{export.keys[0]}:{n}" for n in (1, 2, 3)]


def test_export_lines_give_the_same_reports_as_eventbridge_events(s3cli, export, tmp_path):
    from tests.conftest import write_jsonl
    from tests.shapes import eventbridge, s3_export_line, with_doubled_info
    from tests.sims.guardduty import finding_to_wire

    findings = [make_finding(i, sample=i % 2 == 0) for i in range(6)]
    export.put([s3_export_line(finding_to_wire(f)) for f in findings])  # doubled additionalInfo, E9 times
    events = write_jsonl(tmp_path / "events.jsonl", [eventbridge(with_doubled_info(f)) for f in findings])
    from_s3 = s3cli("send", "--dry-run", "--json", "--enclave-id", "enc-a", export.url())
    from_events = s3cli("send", "--dry-run", "--json", "--enclave-id", "enc-a", str(events))
    assert from_s3.code == from_events.code == 0, from_s3.stderr
    reports = {r["finding_id"]: r["report"] for r in from_s3.records}
    assert reports == {r["finding_id"]: r["report"] for r in from_events.records} and len(reports) == 6
    samples = s3cli("send", "--dry-run", "--json", "--exclude-samples", export.url())
    assert samples.actions() == {"dry-run": 3, "skipped": 3}


# -- delivery, reruns, ordering -----------------------------------------------------------------------------------


def test_rerun_lists_skips_every_object_and_makes_no_station_call(s3cli, proxy, export, sim):
    where = seed_layout(export)
    s3cli.station(sim)
    first = s3cli("send", "--json", export.url())
    assert first.code == 0, first.stderr
    assert first.actions() == {"created": len(where)}
    assert all(len(v) == 1 for v in sim.reports_by_external_id().values())
    proxy.reset()
    calls_before = len(sim.calls)
    again = s3cli("send", "--json", export.url())
    assert again.code == 0, again.stderr
    assert again.records == []
    assert proxy.count("GetObject") == 0 and proxy.count("ListObjectsV2") > 0
    assert [c.kind for c in sim.calls[calls_before:] if c.kind not in ("token", "enclaves")] == []
    assert f"s3: {len(export.keys)} objects listed, 0 read, {len(export.keys)} skipped" in again.stderr
    forced = s3cli("send", "--json", "--force", export.url())
    assert forced.actions() == {"updated": len(where)} and proxy.count("GetObject") == len(export.keys)


def test_same_finding_in_many_objects_newest_wins_even_out_of_order(s3cli, export, sim):
    base = make_finding(1)
    versions = []
    for n, day in enumerate(DAYS[:3]):
        version = dict(base, updatedAt=at(day), title=f"version {n}")
        versions.append(version)
        export.put([version, make_finding(100 + n, updated_at=at(day))], day=day)
    export.put([versions[0]], day=DAYS[3])  # an old copy, exported (or copied) late: read last
    s3cli.station(sim)
    result = s3cli("send", "--json", export.url())
    assert result.code == 0, result.stderr
    mine = [r["action"] for r in result.records if r["finding_id"] == base["id"]]
    assert mine == ["created", "updated", "updated", "unchanged"]  # written once per newer updatedAt
    assert sim.count("upsert") == 3 + 3
    reports = sim.reports_by_external_id()[("enc-a", ext(base["id"]))]
    assert len(reports) == 1 and "version 2" in reports[0]["title"]
    # and an older copy in a later run (an old export read again) leaves the newer report alone
    export.put([versions[1]], day=DAYS[3])
    later = s3cli("send", "--json", export.url())
    assert later.actions() == {"unchanged": 1}
    assert "version 2" in sim.reports_by_external_id()[("enc-a", ext(base["id"]))][0]["title"]


def test_sigkill_mid_object_then_resume_delivers_exactly_once(s3cli, proxy, export, sim, tmp_path):
    findings = [make_finding(i) for i in range(100)]
    for start in range(0, 100, 20):
        export.put(findings[start:start + 20], day=DAYS[start // 40])
    s3cli.station(sim)
    holder = {}
    # SIGKILL from inside Station when the 31st write arrives: the middle of the second object
    sim.after(30, "upsert", lambda: os.kill(holder["proc"].pid, signal.SIGKILL))
    holder["proc"] = proc = s3cli.popen("send", "--json", "--concurrency", "2", export.url())  # a process to kill
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert 30 <= len(sim.reports) < 100
    resumed = s3cli("send", "--json", export.url())
    assert resumed.code == 0, resumed.stderr
    assert set(resumed.actions()) <= {"created", "updated", "unchanged"}
    by_ext = sim.reports_by_external_id()
    assert sorted(k[1] for k in by_ext) == sorted(ext(f["id"]) for f in findings)
    assert all(len(v) == 1 for v in by_ext.values())  # exactly once, whatever the kill cut
    proxy.reset()
    upserts = sim.count("upsert")
    third = s3cli("send", "--json", export.url())
    assert third.records == [] and proxy.count("GetObject") == 0 and sim.count("upsert") == upserts


# -- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code,message,status", [
    ("AccessDenied", KMS_DENIED, 403),
    ("KMS.DisabledException", "arn:aws:kms:us-east-1:111122223333:key/1234abcd is disabled.", 400),
])
def test_kms_refusal_is_one_line_the_run_goes_on_and_replay_reads_it_again(
        s3cli, proxy, export, sim, tmp_path, code, message, status):
    good = [make_finding(i) for i in range(4)]
    locked = [make_finding(i) for i in range(10, 13)]
    export.put(good[:2], name="a.jsonl.gz")
    refused = export.put(locked, name="b.jsonl.gz")
    export.put(good[2:], name="c.jsonl.gz")
    proxy.refuse(refused, code, message, status)
    failures = tmp_path / "failures.jsonl"
    s3cli.station(sim)
    result = s3cli("send", "--json", "--failures", str(failures), export.url())
    assert result.code == 1, result.stderr
    assert result.actions() == {"created": 4, "invalid": 1}
    problems = [line for line in result.stderr.splitlines() if line.startswith("gdtrustar: invalid:")]
    assert len(problems) == 1
    assert "kms:Decrypt" in problems[0] and f"s3://{export.bucket}/{refused}" in problems[0]
    assert sum(1 for c in proxy.calls if c.op == "GetObject" and c.key == refused) == 1  # not retried
    record = json.loads(failures.read_text())
    assert record["document"] == {"reread": f"s3://{export.bucket}/{refused}"}
    proxy.allow(refused)  # IAM fixed
    replay = s3cli("send", "--json", "--failures", str(failures), str(failures))
    assert replay.code == 0, replay.stderr
    assert {r["finding_id"] for r in replay.records} == {f["id"] for f in locked}
    assert replay.actions() == {"created": 3}
    proxy.reset()
    rerun = s3cli("send", "--json", export.url())  # the replay remembered the object too
    assert rerun.records == [] and proxy.count("GetObject") == 0


def test_access_denied_without_kms_names_s3_getobject(s3cli, proxy, export):
    refused = export.put([make_finding(1)])
    export.put([make_finding(2)])
    proxy.refuse(refused)  # e.g. a bucket policy: S3's plain "Access Denied"
    result = s3cli("send", "--dry-run", "--json", export.url())
    assert result.code == 1
    assert result.actions() == {"dry-run": 1, "invalid": 1}
    line = next(x for x in result.stderr.splitlines() if x.startswith("gdtrustar: invalid:"))
    assert "s3:GetObject" in line and "kms" not in line.lower() and refused in line


def test_other_s3_errors_are_retried_by_botocore(s3cli, proxy, export):
    export.put([make_finding(i) for i in range(5)])
    proxy.fail_next(2, "GetObject", 503, "SlowDown")
    proxy.fail_next(1, "ListObjectsV2", 500, "InternalError")
    result = s3cli("send", "--dry-run", "--json", export.url())
    assert result.code == 0, result.stderr
    assert len(result.records) == 5
    assert proxy.count("GetObject", 503) == 2 and proxy.count("GetObject", 200) == 1


def test_aws_max_attempts_bounds_the_s3_retries(s3cli, proxy, export):
    export.put([make_finding(i) for i in range(5)])
    proxy.fail_next(3, "GetObject", 503, "SlowDown")
    result = s3cli("send", "--dry-run", "--json", export.url(), env={"AWS_MAX_ATTEMPTS": "2"})
    assert result.code == 1, result.stderr
    assert proxy.count("GetObject", 503) == 2 and proxy.count("GetObject", 200) == 0  # gave up after 2 attempts
    ours = [line for line in result.stderr.splitlines() if line.startswith("gdtrustar:")]
    assert any("SlowDown" in line and export.bucket in line for line in ours), ours


def test_connection_cut_mid_object_resumes_with_a_ranged_get(s3cli, proxy, export, sim):
    findings = [make_finding(i) for i in range(40)]
    export.put(findings)
    proxy.cut_next(1, after=300)
    s3cli.station(sim)
    result = s3cli("send", "--json", export.url())
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 40}
    ranged = [c for c in proxy.calls if c.op == "GetObject" and "Range" in c.headers]
    assert len(ranged) == 1 and ranged[0].headers["Range"] == "bytes=300-"
    assert all(len(v) == 1 for v in sim.reports_by_external_id().values())


def test_listing_refused_is_one_line_exit_2(s3cli, proxy, export):
    export.put([make_finding(1)])
    proxy.fail_next(5, "ListObjectsV2", 403, "AccessDenied")
    result = s3cli("send", "--dry-run", export.url())
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "s3:ListBucket" in result.stderr and export.bucket in result.stderr


def test_a_path_outside_the_layout_is_a_usage_error(s3cli, export):
    result = s3cli("send", "--dry-run", export.url("AWSLogs/111122223333/CloudTrail/"))
    assert result.code == 2
    assert "GuardDuty export" in result.stderr


def test_window_margin_keeps_a_finding_exported_the_next_day(s3cli, export):
    late = make_finding(7, updated_at=at(DAYS[0], 23, 50))
    export.put([late], day=DAYS[1])  # published after midnight
    result = s3cli("send", "--dry-run", "--json", "--until", at(DAYS[0], 23, 59), export.url())
    assert ids(result) == {late["id"]}


def test_timestamps_of_today_relative_window(s3cli, export):
    today = datetime.now(timezone.utc).date()
    fresh = make_finding(1, updated_at=datetime.now(timezone.utc) - timedelta(hours=1))
    stale = make_finding(2, updated_at=datetime.now(timezone.utc) - timedelta(days=20))
    export.put([fresh], day=today)
    export.put([stale], day=today - timedelta(days=20))
    result = s3cli("send", "--dry-run", "--json", "--since", "2d", export.url())
    assert ids(result) == {fresh["id"]}


# -- what is remembered ----------------------------------------------------------------------------------------------


def test_an_object_partly_left_out_by_filters_is_read_again_by_a_wider_run(s3cli, proxy, export, sim):
    wanted = make_finding(1, type="UnauthorizedAccess:EC2/SSHBruteForce")
    other = make_finding(2)
    sample = dict(make_finding(3, type="UnauthorizedAccess:EC2/SSHBruteForce"),
                  service={"additionalInfo": {"sample": True}})
    export.put([wanted, other], name="mixed.jsonl.gz")
    export.put([sample], name="sample.jsonl.gz")
    s3cli.station(sim)
    narrow = s3cli("send", "--json", "--exclude-samples", "--type", wanted["type"], export.url())
    assert narrow.code == 0, narrow.stderr
    assert narrow.actions() == {"created": 1, "skipped": 1}
    assert "1 findings outside the filters, not sent" in narrow.stderr
    wide = s3cli("send", "--json", export.url())  # neither object was remembered: both had findings left out
    assert wide.code == 0, wide.stderr
    assert sorted(r["action"] for r in wide.records) == ["created", "created", "unchanged"]
    assert {r["finding_id"] for r in wide.records if r["action"] == "created"} == {other["id"], sample["id"]}
    proxy.reset()
    assert s3cli("send", "--json", export.url()).records == [] and proxy.count("GetObject") == 0


def test_an_object_with_an_unreadable_part_is_not_remembered(s3cli, proxy, export, sim, tmp_path):
    import gzip

    good = make_finding(1)
    body = gzip.compress((json.dumps(good) + "\n{broken\n").encode())
    key = export.folder("123456789012", "us-east-1", DAYS[0]) + "broken.jsonl.gz"
    export.s3.put_object(Bucket=export.bucket, Key=key, Body=body)
    truncated = export.folder("123456789012", "us-east-1", DAYS[0]) + "truncated.jsonl.gz"
    export.s3.put_object(Bucket=export.bucket, Key=truncated,
                         Body=gzip.compress((json.dumps(make_finding(2)) + "\n").encode() * 50)[:200])
    s3cli.station(sim)
    failures = tmp_path / "f.jsonl"
    first = s3cli("send", "--json", "--failures", str(failures), export.url())
    assert first.code == 1
    origins = {r["origin"] for r in first.records if r["action"] == "invalid"}
    assert f"s3://{export.bucket}/{key}:2" in origins
    lines = [json.loads(line) for line in failures.read_text().splitlines()]
    assert {"reread": f"s3://{export.bucket}/{truncated}"} in [line.get("document") for line in lines]
    proxy.reset()
    again = s3cli("send", "--json", export.url())
    assert proxy.count("GetObject") == 2  # both read again: their findings are only in a failures file
    assert again.actions().get("created", 0) == 0 and sim.count("upsert") == first.actions()["created"]


def test_filters_apply_to_files_too(cli, tmp_path):
    from tests.conftest import write_jsonl
    from tests.sims.guardduty import to_eventbridge

    rows = [make_finding(1, region="eu-west-1"), make_finding(2, severity=8.0),
            make_finding(3, account_id="210987654321")]
    path = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(r) for r in rows])
    assert ids(cli("send", "--dry-run", "--json", "--region", "eu-west-1", str(path))) == {rows[0]["id"]}
    assert ids(cli("send", "--dry-run", "--json", "--min-severity", "high", str(path))) == {rows[1]["id"]}
    assert ids(cli("send", "--dry-run", "--json", "--account", "210987654321", str(path))) == {rows[2]["id"]}
    result = cli("send", "--dry-run", "--json", "--since", "2030-01-01", str(path))
    assert result.code == 0 and result.records == [] and "3 findings outside the filters" in result.stderr
