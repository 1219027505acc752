"""Every shape one GuardDuty finding reaches gdtrustar in, built from its wire form by independent code.

``shapes(detail, wire)`` returns ``{name: document}`` for one finding:

* ``event``: the EventBridge event, ``detail`` with a free-form ``additionalInfo``;
* ``event-doubled``: the EventBridge event with ``additionalInfo`` flattened *and* as a ``value`` JSON
  string with ``type: default`` (what real events carry);
* ``camel``: the bare camelCase ``detail``;
* ``wire``: the GetFindings wire JSON (camelCase, ``additionalInfo`` wrapped, timestamps epoch seconds);
* ``boto3``: ``wire`` parsed by botocore's own RestJSON parser: PascalCase, ``datetime`` objects;
* ``aws-cli``: ``aws guardduty get-findings`` output (boto3's structure, datetimes as ISO strings);
* ``s3-export``: one line of GuardDuty's S3 export, read back with ``json.loads``: bare camelCase, the
  doubled ``additionalInfo``, and every ``timestamp`` member as epoch seconds written as a plain float
  (``1513612691.551``), a scientific-notation number (``1.513612691551E9``) or the same as a string.

Times are converted here with the standard library only, never with gdtrustar's own code.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any, Optional

import botocore.parsers
import botocore.session

_MODEL = botocore.session.get_session().get_service_model("guardduty")
_OUTPUT = _MODEL.operation_model("GetFindings").output_shape
FINDING_SHAPE = _OUTPUT.members["Findings"].member
TIME_STYLES = ("float", "sci", "sci-string")
REPORT_FIELDS = ("title", "reportBody", "timeBegan", "externalTrackingId")


def boto3_parse(wire_findings: list) -> list:
    """The findings exactly as boto3's ``get_findings()`` returns them (PascalCase, datetimes)."""
    body = json.dumps({"findings": wire_findings}).encode()
    parsed = botocore.parsers.RestJSONParser().parse({"body": body, "headers": {}, "status_code": 200}, _OUTPUT)
    return parsed["Findings"]


def eventbridge(detail: dict) -> dict:
    """The EventBridge event GuardDuty publishes for ``detail`` (deterministic envelope)."""
    return {"version": "0", "id": f"evt-{detail.get('id')}", "detail-type": "GuardDuty Finding",
            "source": "aws.guardduty", "account": detail.get("accountId", ""), "time": "2024-01-01T00:00:00Z",
            "region": detail.get("region", ""), "resources": [], "detail": detail}


def doubled(info: Any) -> Any:
    """``additionalInfo`` flattened and wrapped at once, as EventBridge and the S3 export carry it."""
    if not isinstance(info, dict) or "value" in info or "type" in info:
        return info  # ambiguous by construction: the flattened keys would collide with the wrapper's
    return {**info, "value": json.dumps(info, separators=(",", ":")), "type": "default"}


def with_doubled_info(detail: dict) -> dict:
    service = detail.get("service")
    if not isinstance(service, dict) or "additionalInfo" not in service:
        return detail
    return {**detail, "service": {**service, "additionalInfo": doubled(service["additionalInfo"])}}


def cli_form(pascal: dict) -> dict:
    """What ``aws guardduty get-findings`` prints: boto3's structure with ISO-8601 strings."""
    return json.loads(json.dumps(pascal, default=lambda value: value.isoformat()))


def s3_export_line(wire: dict, style: str = "mixed") -> str:
    """One line of the S3 export for this finding (see the module docstring); ``style`` picks the times."""
    tokens: dict[str, str] = {}
    nonce = uuid.uuid4().hex
    line = _retime(wire, FINDING_SHAPE, tokens, nonce, style)
    text = json.dumps(line, ensure_ascii=False)
    for token, literal in tokens.items():
        text = text.replace(json.dumps(token), literal)
    return text


def _retime(value: Any, shape, tokens: dict, nonce: str, style: str) -> Any:
    kind = shape.type_name
    if shape.name == "ServiceAdditionalInfo" and isinstance(value, dict):
        raw = value.get("value")
        decoded = _json_object(raw)
        if decoded is not None and set(value) <= {"value", "type"} and not {"value", "type"} & set(decoded):
            return {**decoded, "value": raw, "type": value.get("type", "default")}
        return value
    if kind == "structure" and isinstance(value, dict):
        members = {m.serialization.get("name", name): m for name, m in shape.members.items()}
        return {key: _retime(element, members[key], tokens, nonce, style) if key in members else element
                for key, element in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_retime(element, shape.member, tokens, nonce, style) for element in value]
    if kind == "map" and isinstance(value, dict):
        return {key: _retime(element, shape.value, tokens, nonce, style) for key, element in value.items()}
    if kind == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool):
        pick = TIME_STYLES[len(tokens) % 3] if style == "mixed" else style
        token = f"@@time-{nonce}-{len(tokens)}@@"
        literal = repr(float(value)) if pick == "float" else scientific(float(value))
        tokens[token] = json.dumps(literal) if pick == "sci-string" else literal
        return token
    return value


def _json_object(raw: Any) -> Optional[dict]:
    if not isinstance(raw, str):
        return None
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def scientific(number: float) -> str:
    """Java's ``Double.toString`` for large values: ``1513612691.551`` -> ``1.513612691551E9``."""
    sign, digits, exponent = Decimal(repr(number)).normalize().as_tuple()
    text = "".join(map(str, digits)) or "0"
    power = len(digits) - 1 + exponent
    mantissa = text[0] + "." + (text[1:] or "0")
    return ("-" if sign else "") + f"{mantissa}E{power}"


def shapes(detail: dict, wire: dict, style: str = "mixed") -> dict[str, Any]:
    """Every shape of one finding (``detail``: camelCase, free-form additionalInfo; ``wire``: its API JSON)."""
    pascal = boto3_parse([wire])[0]
    return {
        "event": eventbridge(detail),
        "event-doubled": eventbridge(with_doubled_info(detail)),
        "camel": detail,
        "wire": wire,
        "boto3": pascal,
        "aws-cli": cli_form(pascal),
        "s3-export": json.loads(s3_export_line(wire, style)),
    }

