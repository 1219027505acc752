"""Hypothesis strategies built from botocore's GuardDuty service model.

``finding_forms()`` walks the ``Finding`` output shape of ``GetFindings`` recursively (depth-bounded):
structure -> a random subset of its members (the finding's required ones always present), list ->
short lists and occasionally long ones, map -> small dicts, string -> odd unicode text except for
fields with a realistic generator (IP addresses, domains, access key ids, times, ids), timestamp ->
datetimes, double -> floats in range. Every generated finding exists in three dialects:

* ``detail``: the camelCase EventBridge ``detail`` (``additionalInfo`` a free-form object, timestamps
  as ISO strings, ``launchTime``-like string times sometimes as epoch milliseconds, ``asn`` sometimes
  a number, ``null`` for some absent members) -- ``event`` wraps it as the EventBridge event;
* ``wire``: the camelCase GetFindings wire JSON (``additionalInfo`` as ``{value: JSON, type}``,
  timestamps as epoch seconds);
* ``pascal``: ``wire`` parsed by botocore's own RestJSON parser, i.e. exactly what boto3 returns.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.parsers
import botocore.session
from hypothesis import strategies as st
from hypothesis.provisional import domains

MODEL = botocore.session.get_session().get_service_model("guardduty")
GET_FINDINGS_OUTPUT = MODEL.operation_model("GetFindings").output_shape
FINDING_SHAPE = GET_FINDINGS_OUTPUT.members["Findings"].member

MAX_DEPTH = 7
REQUIRED = ("id", "type", "severity", "accountId", "region", "createdAt", "updatedAt")
IPV4_FIELDS = frozenset({"ipAddressV4", "privateIpAddress", "publicIp"})
IPV6_FIELDS = frozenset({"ipAddressV6", "ipv6Addresses"})
ANY_IP_FIELDS = frozenset({"ip", "sourceIPs"})
DOMAIN_FIELDS = frozenset({"domain", "domainWithSuffix", "publicDnsName", "privateDnsName"})
ACCESS_KEY_FIELDS = frozenset({"accessKeyId"})
INDICATOR_FIELDS = IPV4_FIELDS | IPV6_FIELDS | ANY_IP_FIELDS | DOMAIN_FIELDS | ACCESS_KEY_FIELDS
_TIME_SUFFIXES = ("At", "Time", "Seen")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1", "il-central-1")
TYPES = ("Recon:EC2/PortProbeUnprotectedPort", "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
         "Backdoor:EC2/C&CActivity.B!DNS", "CryptoCurrency:EC2/BitcoinTool.B!DNS",
         "Execution:Runtime/NewBinaryExecuted", "AttackSequence:IAM/CompromisedCredentials")
ODD = ("", " ", "\u202eevil\u202c", "\u0000", "nul\u0000mid", "\u2028\u2029", "\ufeffbom", "e\u0301\u0301",
       "😀👩‍💻", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\t\r\n", "ﷺ", "\\\"'<>&", "Ω≈ç√", "\u00a0\u3000", "a" * 300)

_text = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(ODD),
    st.text(string.ascii_letters + string.digits + "-_. /:", min_size=1, max_size=16),
)
_ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_access_key = st.tuples(st.sampled_from(("AKIA", "ASIA")), st.text(string.ascii_uppercase + "234567", min_size=16,
                                                                      max_size=16)).map("".join)
# From 1990: epoch milliseconds before 1973-03-03 are below 1e11 and read as seconds (documented heuristic).
_moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2099, 12, 31),
                        timezones=st.just(timezone.utc)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))  # GuardDuty times carry milliseconds
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), _text,
                          st.floats(allow_nan=False, allow_infinity=False))
_free_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner,
                                                                                                      max_size=3),
                          max_leaves=8)


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class FindingForms:
    """One generated finding in every dialect (see the module docstring)."""

    detail: dict
    wire: dict
    pascal: dict = field(repr=False)

    @property
    def event(self) -> dict:
        return eventbridge(self.detail)

    @property
    def cli_pascal(self) -> dict:
        """``aws guardduty get-findings`` output: boto3's structure with ISO strings for datetimes."""
        return json.loads(json.dumps(self.pascal, default=lambda value: value.isoformat()))


def eventbridge(detail: dict) -> dict:
    """Wrap a camelCase finding as the EventBridge event GuardDuty publishes (deterministic ids)."""
    return {"version": "0", "id": f"evt-{detail.get('id')}", "detail-type": "GuardDuty Finding",
            "source": "aws.guardduty", "account": detail.get("accountId", ""), "time": "2024-01-01T00:00:00Z",
            "region": detail.get("region", ""), "resources": [], "detail": detail}


def boto3_parse(wire_findings: list) -> list:
    """The findings exactly as boto3's ``get_findings()`` returns them."""
    body = json.dumps({"findings": wire_findings}).encode()
    parsed = botocore.parsers.RestJSONParser().parse({"body": body, "headers": {}, "status_code": 200},
                                                     GET_FINDINGS_OUTPUT)
    return parsed["Findings"]


# --- the walk --------------------------------------------------------------------------------------------


def _wire_name(name: str, member) -> str:
    return member.serialization.get("name", name)


def _structure(draw, shape, depth: int, top: bool = False) -> tuple[dict, dict]:
    members = {_wire_name(name, member): member for name, member in shape.members.items()}
    required = [name for name in REQUIRED if name in members] if top else []
    optional = sorted(name for name in members if name not in required)
    budget = len(optional) if top else (4 if depth <= 2 else 2 if depth <= 4 else 1 if depth < MAX_DEPTH else 0)
    # Members that can hold an IP address, domain, access key, a time or additionalInfo are drawn first and
    # more often: they are where doors differ and what the report must keep.
    hot = [name for name in optional if _holds_indicators(members[name], name)]
    cold = [name for name in optional if name not in hot]
    chosen = []
    for pool, size in ((hot, budget), (cold, budget // 2 + 1)):
        if pool and budget:
            chosen += draw(st.lists(st.sampled_from(pool), min_size=1 if pool is hot else 0,
                                    max_size=min(size, len(pool)), unique=True))
    detail: dict = {}
    wire: dict = {}
    for name in required + chosen:
        detail[name], wire[name] = _value(draw, members[name], name, depth + 1)
    absent = [name for name in optional if name not in detail]
    if absent and draw(st.integers(0, 3)) == 0:  # EventBridge sends nulls that the API leaves out
        detail[draw(st.sampled_from(absent))] = None
    return detail, wire


_HOLDS: dict = {}


def _holds_indicators(shape, name: str) -> bool:
    """True when a value of ``shape`` (reached as member ``name``) can contain an indicator field, a time
    (a ``timestamp`` member or a String one named like a time) or ``additionalInfo``."""
    if name in INDICATOR_FIELDS or shape.type_name == "timestamp" or shape.name == "ServiceAdditionalInfo":
        return True
    if shape.type_name == "string" and name.endswith(_TIME_SUFFIXES):
        return True
    key = shape.name
    if key not in _HOLDS:
        _HOLDS[key] = False  # the model has no recursive shapes; this only guards against them
        kind = shape.type_name
        if kind == "structure":
            _HOLDS[key] = any(_holds_indicators(member, _wire_name(child, member))
                              for child, member in shape.members.items())
        elif kind == "list":
            _HOLDS[key] = _holds_indicators(shape.member, "")
        elif kind == "map":
            _HOLDS[key] = _holds_indicators(shape.value, "")
    return _HOLDS[key]


def _value(draw, shape, name: str, depth: int) -> tuple[Any, Any]:
    kind = shape.type_name
    if shape.name == "ServiceAdditionalInfo":
        return _additional_info(draw)
    if kind == "structure":
        return _structure(draw, shape, depth)
    if kind == "list":
        return _list(draw, shape, name, depth)
    if kind == "map":
        if depth >= MAX_DEPTH:
            return {}, {}
        keys = draw(st.lists(_text, max_size=2, unique=True))
        pairs = {key: _value(draw, shape.value, key, depth + 1) for key in keys}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    if kind == "string":
        return _string(draw, name)
    if kind == "timestamp":
        moment = draw(_moments)
        return iso_ms(moment), epoch_ms(moment) / 1000.0  # EventBridge: ISO; API: epoch seconds
    if kind in ("double", "float"):
        if name == "severity":
            number = draw(st.floats(0, 10))
        elif name in ("lat", "lon"):
            number = draw(st.floats(-180, 180))
        else:
            number = draw(st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False))
        as_int = number.is_integer() and math.copysign(1.0, number) > 0 and draw(st.booleans())  # not -0.0
        return (int(number) if as_int else number), number  # EventBridge writes 5, the API 5.0
    if kind in ("integer", "long"):
        number = draw(st.integers(0, 65535) if name in ("port", "pid", "count") else st.integers(-2**31, 2**31 - 1))
        return number, number
    if kind == "boolean":
        flag = draw(st.booleans())
        return flag, flag
    raise AssertionError(f"unhandled shape type {kind}")


def _list(draw, shape, name: str, depth: int) -> tuple[list, list]:
    if depth >= MAX_DEPTH:
        return [], []
    item = shape.member
    if draw(st.integers(0, 11)) == 0:  # occasionally long
        if item.type_name == "string":
            rng = random.Random(draw(st.integers(0, 2**32)))
            items = [_seeded_string(rng, name) for _ in range(draw(st.integers(20, 700)))]
            return items, list(items)
        size = draw(st.integers(8, 30)) if depth <= 4 else draw(st.integers(0, 4))
    else:
        size = draw(st.integers(0, 3))
    pairs = [_value(draw, item, name, depth + 1) for _ in range(size)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _seeded_string(rng: random.Random, name: str) -> str:
    if name in IPV6_FIELDS:
        return str(ipaddress.IPv6Address(rng.getrandbits(128)))
    if name in ANY_IP_FIELDS or name in IPV4_FIELDS:
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    if name in DOMAIN_FIELDS:
        return f"h{rng.getrandbits(40):x}.example{rng.randint(0, 9)}.net"
    return "".join(rng.choice(string.ascii_letters + "-_ ") for _ in range(rng.randint(0, 12)))


def _string(draw, name: str) -> tuple[Any, Any]:
    if name in IPV4_FIELDS:
        value = draw(_ipv4)
    elif name in IPV6_FIELDS:
        value = draw(_ipv6)
    elif name in ANY_IP_FIELDS:
        value = draw(_ipv4 | _ipv6)
    elif name in DOMAIN_FIELDS:
        value = draw(domains())
    elif name in ACCESS_KEY_FIELDS:
        value = draw(_access_key)
    elif name == "accountId" or name == "vpcOwnerAccountId":
        value = draw(st.text(string.digits, min_size=12, max_size=12))
    elif name == "region":
        value = draw(st.sampled_from(REGIONS))
    elif name == "partition":
        value = draw(st.sampled_from(("aws", "aws-cn", "aws-us-gov")))
    elif name == "id":
        value = draw(st.text("0123456789abcdef", min_size=32, max_size=32)
                     | st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8))
    elif name == "type":
        value = draw(st.sampled_from(TYPES) | _text.filter(bool))
    elif name == "title":
        value = draw(_text) * draw(st.sampled_from((1, 1, 1, 40)))  # sometimes far over the title limit
    elif name == "asn":
        number = draw(st.integers(-1, 4_294_967_295))
        return (number if draw(st.booleans()) else str(number)), str(number)  # EventBridge: a number, API: a string
    elif name.endswith(_TIME_SUFFIXES):
        return _string_time(draw)
    else:
        value = draw(_text)
    return value, value


def _string_time(draw) -> tuple[Any, str]:
    """A String-typed time: the API sends ISO text, EventBridge the same or epoch milliseconds."""
    moment = draw(_moments)
    text = draw(st.sampled_from((iso_ms(moment), moment.strftime("%Y-%m-%dT%H:%M:%S.")
                                 + f"{moment.microsecond // 1000:03d}+00:00")))
    return (epoch_ms(moment) if draw(st.integers(0, 3)) == 0 else text), text


def _unambiguous(info: dict) -> bool:
    """False for a free-form object that reads as the API's wrapper itself: a ``value`` string holding a
    JSON object beside a ``type`` (or alone), or only ``value``/``type`` keys. No door can tell those apart."""
    if info and set(info) <= {"value", "type"}:
        return False
    raw = info.get("value")
    if isinstance(raw, str) and ("type" in info or len(info) == 1):
        try:
            return not isinstance(json.loads(raw), dict)
        except ValueError:
            return True
    return True


def _additional_info(draw) -> tuple[dict, dict]:
    """EventBridge: a free-form object; API: ``{"value": <that object as JSON>, "type": "default"}``.

    An object that reads as the wrapper itself is left out: it is ambiguous by construction.
    """
    info = draw(st.dictionaries(_text, _free_json, min_size=draw(st.sampled_from((0, 1, 1, 1))), max_size=4)
                .filter(_unambiguous))
    if draw(st.integers(0, 3)) == 0:
        info["sample"] = draw(st.sampled_from((True, False, "true", "True")))
    return info, {"value": json.dumps(info), "type": "default"}


@st.composite
def finding_forms(draw) -> FindingForms:
    """A GuardDuty finding generated from the service model, in every dialect."""
    detail, wire = _structure(draw, FINDING_SHAPE, 0, top=True)
    return FindingForms(detail, wire, boto3_parse([wire])[0])


def indicator_values(finding: Any, key: str = "") -> list[str]:
    """Every IP address, domain and access key id (by field name) in a camelCase finding."""
    out: list[str] = []
    if isinstance(finding, dict):
        for name, value in finding.items():
            out.extend(indicator_values(value, str(name)))
    elif isinstance(finding, list):
        for element in finding:
            out.extend(indicator_values(element, key))
    elif isinstance(finding, str) and key in INDICATOR_FIELDS:
        out.append(finding)
    return out
