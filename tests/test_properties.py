"""Properties of normalise + map over findings generated from botocore's GuardDuty model (tests/strategies.py).

Each generated finding exists as the EventBridge event, the camelCase GetFindings wire JSON and the
PascalCase structure boto3 returns (botocore's own parser). Whatever the door, the normaliser must
accept it and the mapper must produce a byte-identical report that keeps every indicator visible.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gdtrustar.findings import normalize
from gdtrustar.mapper import INDICATOR_BUDGET, TITLE_LIMIT, build_report, count_indicators
from gdtrustar.station import payload as v13_payload
from gdtrustar.writer import digest
from tests.conftest import write_jsonl
from tests.strategies import finding_forms, indicator_values

ENCLAVE = "enc-props"
TRIM_NOTE = "finding trimmed to stay under Station's 500-indicator limit"
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


def _payload_bytes(report) -> bytes:
    return json.dumps(v13_payload(report), sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


@PROPS
@given(finding_forms())
def test_every_dialect_normalises_to_the_same_finding_and_a_byte_identical_report(forms):
    from_event = normalize(forms.event)
    from_wire = normalize(forms.wire)
    from_boto3 = normalize(forms.pascal)
    from_aws_cli = normalize(forms.cli_pascal)
    assert from_event == from_wire == from_boto3 == from_aws_cli
    reports = [build_report(finding, ENCLAVE) for finding in (from_event, from_wire, from_boto3, from_aws_cli)]
    assert len({_payload_bytes(report) for report in reports}) == 1
    assert len({digest(v13_payload(report)) for report in reports}) == 1


@PROPS
@given(finding_forms())
def test_report_keeps_every_indicator_or_says_it_trimmed_and_title_fits(forms):
    finding = normalize(forms.event)
    report = build_report(finding, ENCLAVE)  # never raises on a valid finding
    body = report.body
    missing = [value for value in indicator_values(finding) if value not in body]
    if missing:
        summary = body.split("\nFull finding (JSON):\n", 1)[0]
        assert TRIM_NOTE in summary, f"{len(missing)} indicators silently dropped, e.g. {missing[:3]}"
    assert count_indicators(body) <= INDICATOR_BUDGET
    assert 0 < len(report.title) <= TITLE_LIMIT
    assert "\n" not in report.title
    assert report.title.startswith("[")
    assert v13_payload(report)["enclaveIds"] == [ENCLAVE]
    assert len(report.external_url) <= 500


@PROPS
@given(finding_forms())
def test_a_canonical_finding_replayed_from_a_failures_file_maps_to_the_same_report(forms):
    finding = normalize(forms.event)
    # the failures file stores the canonical finding as JSON; replay normalises it again
    replayed = normalize(json.loads(json.dumps(finding, sort_keys=True, ensure_ascii=False, default=str)))
    assert replayed == finding
    assert build_report(replayed, ENCLAVE) == build_report(finding, ENCLAVE)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
@given(st.lists(finding_forms(), min_size=4, max_size=4, unique_by=lambda forms: forms.wire["id"]))
def test_the_console_script_gives_identical_reports_for_events_and_aws_cli_output(tmp_path_factory, batch):
    """The same property through the real ``gdtrustar send --dry-run --json`` (two doors, one file each)."""
    from tests.conftest import Cli

    tmp = tmp_path_factory.mktemp("doors")
    cli = Cli(tmp)
    events = write_jsonl(tmp / "events.jsonl", [forms.event for forms in batch])
    aws_cli = tmp / "get-findings.json"
    aws_cli.write_text(json.dumps({"Findings": [forms.cli_pascal for forms in batch]}))
    results = [cli("send", "--dry-run", "--json", "--enclave-id", ENCLAVE, str(path)) for path in (events, aws_cli)]
    for result in results:
        assert result.code == 0, result.stderr
        assert "Traceback" not in result.stderr
    # split on "\n" only: records may carry U+2028 and friends, which str.splitlines() would cut
    by_door = [{r["finding_id"]: r["report"] for r in map(json.loads, filter(None, result.stdout.split("\n")))}
               for result in results]
    assert by_door[0] == by_door[1]
    assert set(by_door[0]) == {forms.wire["id"] for forms in batch}
