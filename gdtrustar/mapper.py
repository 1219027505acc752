"""Finding -> report: the only place that knows what a report says (its wire form is the backend's).

A report body is a plain-text triage summary followed by the complete finding as sorted,
indented JSON, so Station's indicator extraction sees every IP, domain, hash, URL and e-mail
address. The summary is data-driven: each section is one entry of ``report_layout.LAYOUT`` (heading,
path, fields), rendered by the same few defensive helpers, so a missing or oddly typed section is
simply omitted and a new resource family is one more entry. A list longer than ``SUMMARY_ITEMS``
shows its first entries and "… and N more port probes" in the summary; the appendix keeps them all.

Station rejects a report with more than 500 indicators (docs/decisions.md#indicator-cap; whether the cap is 500 or
2000 is unconfirmed, so we assume the lower one). Counting is cheap (one ``translate`` and
``split``, then a regex over the few candidate words); only a finding over the budget pays for
trimming, which cuts long lists (port probes, source IPs, signals, ...) with a visible note in
both the summary and the JSON appendix.

Pure and deterministic: the same normalised finding and enclave give a byte-identical Report.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gdtrustar.findings import is_sample
from gdtrustar.indicators import count_indicators, indicator_bound
from gdtrustar.report_json import appendix_json, to_json
from gdtrustar.report_layout import OVERVIEW, SECTIONS

__all__ = ["INDICATOR_BUDGET", "SEVERITY_LABELS", "TITLE_LIMIT", "Report", "build_report", "console_url",
           "count_indicators", "external_id", "severity_label", "to_json"]

#: (lower bound, label), highest first; GuardDuty's bands (docs/decisions.md#severity-bands).
#: Below 1.0 is "reserved"; we say Low.
SEVERITY_LABELS = ((9.0, "Critical"), (7.0, "High"), (4.0, "Medium"), (0.0, "Low"))
# Station's title limit is UNCONFIRMED (docs/decisions.md#report-limits); 256 keeps titles readable and is a common cap.
TITLE_LIMIT = 256
URL_LIMIT = 500  # externalUrl "Limit 500 alphanumeric characters" (docs/decisions.md#report-limits)
# Longest single value shown; Station's body size limit is UNCONFIRMED (docs/decisions.md#report-limits).
STRING_LIMIT = 16_384
INDICATOR_BUDGET = 450  # Station's cap is 500: leave a margin for tokens it counts differently
SUMMARY_ITEMS = 20  # a list longer than this shows its first 20 in the summary, then "… and N more"
_CAPS = (200, 100, 50, 20, 10, 5, 2, 1, 0)  # list lengths tried, in order, when a finding is too big
_TRIM_REASON = "finding trimmed to stay under Station's 500-indicator limit"
_CONSOLE_HOSTS = {"aws-cn": "console.amazonaws.cn", "aws-us-gov": "console.amazonaws-us-gov.com"}

def severity_label(severity: object) -> str:
    """Return GuardDuty's band name (Low/Medium/High/Critical) for a severity score."""
    for bound, label in SEVERITY_LABELS:
        if isinstance(severity, (int, float)) and severity >= bound:
            return label
    return "Low"


def external_id(enclave_id: str, finding_id: str) -> str:
    """Return base64("<enclave>|<finding id>"), the original integration's key, so its reports are updated."""
    return base64.b64encode(f"{enclave_id}|{finding_id}".encode()).decode("ascii")


def console_url(finding: dict) -> str:
    """Return the GuardDuty console link to the finding, in its own region and partition."""
    region = quote(str(finding.get("region") or "us-east-1"), safe="")
    partition = finding.get("partition") or (
        "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws")
    host = _CONSOLE_HOSTS.get(partition, f"{region}.console.aws.amazon.com")
    base = f"https://{host}/guardduty/home?region={region}#/findings?macros=current"
    url = f"{base}&fId={quote(str(finding.get('id', '')), safe='')}"
    return url if len(url) <= URL_LIMIT else base[:URL_LIMIT]


@dataclass(frozen=True)
class Report:
    """One incident report, backend-neutral: a backend renders it in its own wire form (``writer.Backend``).

    ``time_began`` is "" when the finding has no usable time (the backend lets the service use now).
    """

    title: str
    body: str
    time_began: str
    external_id: str
    external_url: str
    enclave_id: str


def build_report(finding: dict, enclave_id: str) -> Report:
    """Map a normalised finding (``findings.normalize`` output) to its Station report."""
    strings: list[str] = []
    appendix = appendix_json(finding, strings)
    notes: list[str] = []
    if max(map(len, strings), default=0) > STRING_LIMIT:  # rare: only absurd findings pay for a copy
        finding, strings = _cap_strings(finding, notes), []
        appendix = appendix_json(finding, strings)
    body = _body(finding, notes, appendix)
    # The summary only repeats the finding's strings, so a cheap upper bound over those distinct
    # strings spares the exact count of the whole body on the common (small) path.
    if indicator_bound("\n".join(set(strings))) > INDICATOR_BUDGET - 100:
        if count_indicators(body) > INDICATOR_BUDGET:
            body = _trimmed_body(finding)
    return Report(title=_title(finding), body=body, time_began=_time_began(finding),
                  external_id=external_id(enclave_id, str(finding.get("id", ""))),
                  external_url=console_url(finding), enclave_id=enclave_id)


def _title(finding: dict) -> str:
    text = str(finding.get("title") or finding.get("type") or "GuardDuty finding")
    if is_sample(finding) and not text.startswith("[SAMPLE]"):
        text = "[SAMPLE] " + text
    text = " ".join(f"[{severity_label(finding.get('severity'))}] {text}".split())
    return text if len(text) <= TITLE_LIMIT else text[:TITLE_LIMIT - 1] + "…"


def _time_began(finding: dict) -> str:
    """Whole seconds with an explicit offset: the form Station documents (docs/decisions.md#report-fields)."""
    service = finding.get("service")
    first_seen = service.get("eventFirstSeen") if isinstance(service, dict) else None
    for stamp in (first_seen, finding.get("createdAt"), finding.get("updatedAt")):
        if isinstance(stamp, str) and len(stamp) == 24 and stamp.endswith("Z"):  # canonical from normalize()
            return stamp[:19] + "+00:00"
    return ""


def _body(finding: dict, notes: tuple[str, ...] | list[str], appendix: str = "") -> str:
    severity = finding.get("severity")
    lines = [f"GuardDuty finding: {finding.get('title') or finding.get('type')}"]
    lines.extend(f"NOTE: {note}" for note in notes)
    lines.append(f"Severity: {severity} ({severity_label(severity)})")
    lines.extend(f"{label}: {text}" for label, text in _values(finding, OVERVIEW))
    if is_sample(finding):
        lines.append("Sample: yes (generated by GuardDuty, not real activity)")
    for heading, path, fields, rows, plural in SECTIONS:
        target = _dig(finding, path)
        if not target or isinstance(target, str):
            continue
        if target.__class__ is not list:
            _render(lines, heading, target, fields, rows)
            continue
        for index, item in enumerate(target[:SUMMARY_ITEMS]):
            _render(lines, heading if rows else f"{heading} {index + 1}", item, fields, rows)
        if len(target) > SUMMARY_ITEMS:  # the JSON appendix below still holds every one of them
            _summarise_rest(lines, target[SUMMARY_ITEMS:], plural)
    info = _dig(finding, ("service", "additionalInfo"))
    if isinstance(info, dict) and info:
        lines.append("Additional info:")
        lines.extend(f"  {key}: {_text(info[key])}" for key in sorted(info, key=str))
    if finding.get("description"):
        lines.extend(("", "Description:", str(finding["description"])))
    lines.extend(("", "Full finding (JSON):", appendix or to_json(finding), ""))
    return "\n".join(lines)


def _summarise_rest(lines: list[str], rest: list, plural: str) -> None:
    """One "… and N more" line for the items past ``SUMMARY_ITEMS``; trim notes among them stay visible."""
    notes = [item for item in rest if isinstance(item, str)]
    if len(rest) > len(notes):
        lines.append(f"  … and {len(rest) - len(notes):,} more {plural} (all in the JSON below)")
    lines.extend(f"  {note}" for note in notes)


def _render(lines: list[str], heading: str, item: Any, fields: tuple, rows: bool) -> None:
    if isinstance(item, str):  # a trim note standing in for omitted list entries
        lines.append(f"  {item}")
        return
    pairs = _values(item, fields)
    if not pairs:
        return
    if rows:
        lines.append(f"  - {heading}: " + "; ".join(f"{label}: {text}" for label, text in pairs))
    else:
        lines.append(f"{heading}:")
        lines.extend(f"  {label}: {text}" for label, text in pairs)


def _values(obj: Any, fields: tuple) -> list[tuple[str, str]]:
    """Return (label, text) for every field present in ``obj``; lists along a path are flattened."""
    pairs = []
    for label, keys in fields:
        value = obj
        for key in keys:  # fast path: plain nested objects
            if value.__class__ is not dict:
                break
            value = value.get(key)
        else:
            if value.__class__ is str or value.__class__ is int or value.__class__ is float:
                if value != "":
                    pairs.append((label, value if value.__class__ is str else _text(value)))
                continue
        if value is None:
            continue
        found = _lookup(obj, keys)  # lists on the way, or a list / object at the end
        if found:
            texts = list(dict.fromkeys(_text(element) for element in found))
            pairs.append((label, _joined(texts)))
    return pairs


def _lookup(obj: Any, keys: tuple[str, ...]) -> list[Any]:
    for position, key in enumerate(keys):
        if isinstance(obj, dict):
            obj = obj.get(key)
        elif isinstance(obj, list):
            return [value for element in obj for value in _lookup(element, keys[position:])]
        else:
            return []
    if isinstance(obj, list):
        return [value for value in obj if value is not None and value != "" and value != {}]
    return [] if obj is None or obj == "" or obj == {} else [obj]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        if len(value) == 2 and "key" in value and "value" in value:
            return f"{value['key']}={value['value']}"  # tags
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if isinstance(value, list):
        return _joined([_text(element) for element in value])
    return str(value)


def _joined(texts: list[str]) -> str:
    """Comma-joined, the first ``SUMMARY_ITEMS`` and a count of the rest (the JSON has them all)."""
    if len(texts) <= SUMMARY_ITEMS:
        return ", ".join(texts)
    return ", ".join(texts[:SUMMARY_ITEMS]) + f", … and {len(texts) - SUMMARY_ITEMS:,} more"


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _trimmed_body(finding: dict) -> str:
    """Cut ever more of the long lists until the body fits Station's indicator cap."""
    for cap in _CAPS:
        notes: list[str] = []
        body = _body(_cap_lists(finding, cap, "", notes), notes)
        if count_indicators(body) <= INDICATOR_BUDGET:
            return body
    # The indicators sit in long strings, not lists: keep the identifying fields only.
    keep = ("id", "arn", "type", "title", "severity", "accountId", "region", "partition", "createdAt",
            "updatedAt")
    note = f"the finding's details were omitted ({_TRIM_REASON}); see the GuardDuty console"
    return _body({key: finding[key] for key in keep if key in finding}, [note])


def _cap_strings(obj: Any, notes: list[str]) -> Any:
    """Copy ``obj`` with every string over ``STRING_LIMIT`` cut, saying so once in the notes."""
    if isinstance(obj, dict):
        return {key: _cap_strings(value, notes) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_cap_strings(value, notes) for value in obj]
    if isinstance(obj, str) and len(obj) > STRING_LIMIT:
        if not notes:
            notes.append(f"values longer than {STRING_LIMIT:,} characters were cut")
        return f"{obj[:STRING_LIMIT]}… [{len(obj) - STRING_LIMIT:,} more characters omitted]"
    return obj


def _cap_lists(obj: Any, cap: int, name: str, notes: list[str]) -> Any:
    """Copy ``obj`` with every list longer than ``cap`` cut, leaving a note where entries went."""
    if isinstance(obj, dict):
        return {key: _cap_lists(obj[key], cap, str(key), notes) for key in sorted(obj, key=str)}
    if not isinstance(obj, list):
        return obj
    kept = [_cap_lists(element, cap, name, notes) for element in obj[:cap]]
    if len(obj) > cap:
        note = f"… {len(obj) - cap:,} more {name} entries omitted ({_TRIM_REASON})"
        notes.append(note)
        kept.append(note)
    return kept
