"""One report per finding, whatever shape it came in (issue 10 §2).

The shapes are built by tests/shapes.py from the finding's wire JSON with independent code (botocore's
own parser for boto3, the standard library for times): EventBridge event (plain and with the doubled
``additionalInfo``), bare camelCase, GetFindings wire JSON, boto3 (PascalCase, datetimes), AWS CLI output
and the S3 export line (doubled ``additionalInfo``, nested times as epoch floats and scientific notation).
Every shape must give byte-identical ``title``, ``reportBody``, ``timeBegan`` and ``externalTrackingId``.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdtrustar.findings import normalize
from gdtrustar.mapper import build_report
from gdtrustar.station import payload as v13_payload
from tests.shapes import REPORT_FIELDS, TIME_STYLES, doubled, s3_export_line, scientific, shapes
from tests.sims.guardduty import finding_to_wire
from tests.strategies import finding_forms
from tests.test_findings import sample_candidates

ENCLAVE = "enc-shapes"
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


def reports_by_shape(documents: dict) -> dict[str, tuple]:
    """{shape: (title, reportBody, timeBegan, externalTrackingId) as UTF-8 bytes}."""
    out = {}
    for name, document in documents.items():
        payload = v13_payload(build_report(normalize(document), ENCLAVE))
        out[name] = tuple(str(payload[field]).encode("utf-8", "surrogatepass") for field in REPORT_FIELDS)
    return out


def assert_one_report(documents: dict) -> None:
    reports = reports_by_shape(documents)
    first_name, first = next(iter(reports.items()))
    for name, report in reports.items():
        for field, mine, theirs in zip(REPORT_FIELDS, report, first):
            assert mine == theirs, f"{field} differs between {name} and {first_name}"


# --- the property --------------------------------------------------------------------------------------


@PROPS
@given(finding_forms(), st.sampled_from((*TIME_STYLES, "mixed")))
def test_every_shape_of_a_generated_finding_gives_one_report(forms, style):
    documents = shapes(forms.detail, forms.wire, style)
    assert set(documents) == {"event", "event-doubled", "camel", "wire", "boto3", "aws-cli", "s3-export"}
    findings = {name: normalize(document) for name, document in documents.items()}
    assert all(finding == findings["event"] for finding in findings.values())
    assert_one_report(documents)


@pytest.mark.parametrize("name, candidate", sample_candidates())
def test_every_sample_finding_gives_one_report_in_every_shape(name, candidate):
    canonical = normalize(candidate)
    wire = finding_to_wire(canonical)
    documents = {"as shipped": candidate, **shapes(canonical, wire)}
    # numbers as Decimal (json.loads(parse_float=Decimal), a DynamoDB copy of the export): the same report
    documents["s3-export-decimal"] = json.loads(s3_export_line(wire), parse_float=Decimal, parse_int=Decimal)
    assert_one_report(documents)


# --- additionalInfo ------------------------------------------------------------------------------------

_INFO = {"threatListName": "ProofPoint", "sample": True, "unusual": 22, "nested": {"KeyA": [1, 2.5]}}
_BASE = {"id": "f1", "type": "Recon:EC2/PortProbeUnprotectedPort", "severity": 2.0, "accountId": "123456789012",
         "region": "us-east-1", "createdAt": "2025-01-01T00:00:00.000Z", "updatedAt": "2025-01-01T00:00:00.000Z"}


def _with_info(info) -> dict:
    return dict(_BASE, service={"additionalInfo": info})


@pytest.mark.parametrize("info", [
    _INFO,  # flattened only (EventBridge as documented)
    {"value": json.dumps(_INFO), "type": "default"},  # the API's wire form
    doubled(_INFO),  # flattened and wrapped (real EventBridge events, the S3 export)
    {**doubled(_INFO), "sample": "stale flattened copy"},  # the wrapped JSON is what the API holds: it wins
    {"value": json.dumps(doubled(_INFO)), "type": "default"},  # a wrapper inside a wrapper
])
def test_every_additional_info_form_is_the_same_object(info):
    assert normalize(_with_info(info))["service"]["additionalInfo"] == _INFO


def test_boto3_additional_info_is_the_same_object():
    pascal = {"Id": "f1", "Type": "T", "Severity": 2, "AccountId": "1", "Region": "r",
              "Service": {"AdditionalInfo": {"Value": json.dumps(_INFO), "Type": "default"}}}
    assert normalize(pascal)["service"]["additionalInfo"] == _INFO


def test_additional_info_summary_shows_the_data_not_the_wrapper():
    body = build_report(normalize(_with_info(doubled(_INFO))), ENCLAVE).body
    summary = body.split("Full finding (JSON):")[0]
    assert "  sample: true" in summary and "  threatListName: ProofPoint" in summary
    assert "type: default" not in body and '"value"' not in body


def test_a_non_default_type_stays_visible_the_same_way_in_every_form():
    content = {"threatListName": "X"}
    forms = [{"value": json.dumps(content), "type": "custom"}, {**content, "value": json.dumps(content),
                                                                "type": "custom"}]
    assert [normalize(_with_info(f))["service"]["additionalInfo"] for f in forms] == [
        {"threatListName": "X", "type": "custom"}] * 2
    own_type = {"type": "inner", "threatListName": "X"}
    wrapped = {"value": json.dumps(own_type), "type": "custom"}
    assert normalize(_with_info(wrapped))["service"]["additionalInfo"] == {
        "type": "inner", "threatListName": "X", "additionalInfoType": "custom"}
    summary = build_report(normalize(_with_info(wrapped)), ENCLAVE).body.split("Full finding")[0]
    assert "  additionalInfoType: custom" in summary


@pytest.mark.parametrize("info", [
    {"value": "not json {", "type": "default"},
    {"value": "[1, 2]", "type": "default", "extra": 1},
    {"value": 7, "type": "default"},
    {"threatListName": "X", "type": "default"},  # data that happens to have a "type"
    {"value": {"a": 1}},
])
def test_additional_info_that_is_no_wrapper_is_kept_as_it_came(info):
    assert normalize(_with_info(info))["service"]["additionalInfo"] == info


@pytest.mark.parametrize("info", [_INFO, doubled(_INFO), {"value": json.dumps(_INFO), "type": "custom"},
                                  {"value": "not json {", "type": "default"}])
def test_canonical_additional_info_is_a_fixed_point(info):
    once = normalize(_with_info(info))
    assert normalize(json.loads(json.dumps(once))) == once  # a failures-file replay renders the same report


# --- nested times --------------------------------------------------------------------------------------

_ISO = "2021-11-11T10:22:35.218Z"


@pytest.mark.parametrize("value", [1636626155.218, "1.636626155218E9", 1.636626155218e9, "1636626155.218",
                                   1636626155218, "2021-11-11T11:22:35.218+01:00", _ISO])
def test_nested_epoch_seconds_in_any_notation_render_as_their_iso_twin(value):
    doc = dict(_BASE, resource={"s3BucketDetails": [{"name": "b", "createdAt": value}],
                                "eksClusterDetails": {"name": "c", "createdAt": value}},
               service={"runtimeDetails": {"process": {"name": "p", "startTime": value}}})
    finding = normalize(doc)
    assert finding["resource"]["s3BucketDetails"][0]["createdAt"] == _ISO
    assert finding["resource"]["eksClusterDetails"]["createdAt"] == _ISO
    assert finding["service"]["runtimeDetails"]["process"]["startTime"] == _ISO


def test_scientific_helper_writes_what_java_writes():
    assert scientific(1636625755.218) == "1.636625755218E9"
    assert scientific(1500000000.0) == "1.5E9"
    assert json.loads(scientific(1513612691.551)) == 1513612691.551


def test_the_s3_line_really_holds_scientific_notation():
    canonical = normalize(_with_info(_INFO) | {"resource": {"eksClusterDetails": {"createdAt": _ISO}}})
    line = s3_export_line(finding_to_wire(canonical), "sci")
    assert '"createdAt": 1.636626155218E9' in line and '"type": "default"' in line


# --- other divergences between doors ---------------------------------------------------------------------


def test_empty_lists_and_objects_nulls_and_number_spellings_do_not_change_the_report():
    full = dict(_BASE, resource={"instanceDetails": {"instanceId": "i-1", "productCodes": [], "tags": [],
                                                     "imageDescription": "",
                                                     "networkInterfaces": [{"ipv6Addresses": [],
                                                                            "privateIpAddress": "10.0.0.1"}]}},
                service={"count": 3, "evidence": {}, "additionalInfo": {},
                         "action": {"networkConnectionAction": {"localPortDetails": {"port": 22},
                                                                "remoteIpDetails": {"geoLocation": {"lat": 52}}}}})
    sparse = copy.deepcopy(full)
    details = sparse["resource"]["instanceDetails"]
    del details["productCodes"], details["tags"], details["imageDescription"]
    del details["networkInterfaces"][0]["ipv6Addresses"]
    del sparse["service"]["evidence"], sparse["service"]["additionalInfo"]
    spelled = copy.deepcopy(full)
    spelled["service"]["count"] = "3"  # Integer member as text
    spelled["service"]["action"]["networkConnectionAction"]["localPortDetails"]["port"] = 22.0
    spelled["service"]["action"]["networkConnectionAction"]["remoteIpDetails"]["geoLocation"]["lat"] = 52.0
    spelled["service"]["archived"] = None
    assert normalize(full) == normalize(sparse) == normalize(spelled)
    assert_one_report({"full": full, "sparse": sparse, "spelled": spelled})
