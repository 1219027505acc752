"""In-process Amazon GuardDuty REST emulator for tests.

A real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, port 0, daemon thread) that speaks
GuardDuty's ``rest-json`` wire protocol well enough for *unmodified* boto3 to talk to it, either with
``endpoint_url=emu.url`` or through the standard ``AWS_ENDPOINT_URL_GUARDDUTY`` environment variable.

Routing (HTTP method + ``requestUri``) and the wire names of response members (``locationName``) are
read from botocore's own GuardDuty service model, so paths are never hand-written here.

Findings are stored in *canonical* form: camelCase, as in the ``detail`` of a GuardDuty EventBridge
event (severity a number, ISO timestamps, ``service.additionalInfo`` a free-form object,
``resource.instanceDetails.launchTime`` epoch milliseconds).  ``GetFindings`` serves them in the API wire
form, converted by walking the model's ``Finding`` shape:

* ``Double`` members (``severity``, ``confidence``, …) -> JSON float;
* ``service.additionalInfo`` -> ``{"value": json.dumps(<free-form object>), "type": "default"}``;
* ``String`` members holding an epoch-ms number (``launchTime``) -> ISO-8601 string;
* ``timestamp`` members -> epoch seconds (float);

so boto3 parses the result into exactly what the real GetFindings returns (PascalCase keys, ``datetime``
for timestamp shapes).

The region of each request is taken from the SigV4 credential scope in the ``Authorization`` header;
every region has its own detectors and findings.

Fault knobs are consulted per request in this order: ``deny`` (403 AccessDeniedException),
``throttle_next`` (429 ThrottlingException by default), ``fail_next`` (500 InternalServerErrorException).
Every request, including failed ones, is appended to :attr:`GuardDutyEmulator.calls` *before* the
response is written, so the log is complete as soon as the boto3 call returns.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import botocore.loaders

__all__ = ["Call", "GuardDutyEmulator", "make_finding", "to_eventbridge", "DETECTOR_NOT_OWNED"]

DETECTOR_NOT_OWNED = (
    "The request is rejected because the input detectorId is not owned by the current account."
)
_INVALID_TOKEN = (
    "The request is rejected because an invalid or out-of-range value is specified as an input parameter."
)
_MAX_PAGE = 50
_MAX_IDS = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CRED_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")
_DEFAULT_SAMPLE_TYPES = (
    "Recon:EC2/PortProbeUnprotectedPort",
    "UnauthorizedAccess:EC2/SSHBruteForce",
    "Backdoor:EC2/C&CActivity.B",
    "CryptoCurrency:EC2/BitcoinTool.B",
)
_IMPLEMENTED = (
    "ListDetectors",
    "ListFindings",
    "GetFindings",
    "GetFindingsStatistics",
    "CreateSampleFindings",
    "ArchiveFindings",
)


# --------------------------------------------------------------------------------------------------------
# botocore model helpers
# --------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _model() -> dict:
    return botocore.loaders.Loader().load_service_model("guardduty", "service-2")


@functools.lru_cache(maxsize=1)
def _routes() -> list[tuple[str, re.Pattern, str]]:
    """(method, compiled path regex, operation name) for every operation in the model."""
    routes = []
    for name, op in _model()["operations"].items():
        http = op["http"]
        path = http["requestUri"].split("?", 1)[0]
        pattern = ""
        for part in re.split(r"(\{[^}]+\})", path):
            if part.startswith("{") and part.endswith("}"):
                label = part[1:-1]
                greedy = label.endswith("+")
                label = label.rstrip("+")
                pattern += f"(?P<{label}>{'.+' if greedy else '[^/]+'})"
            else:
                pattern += re.escape(part)
        routes.append((http["method"].upper(), re.compile(f"^{pattern}/?$"), name))
    # Most specific (longest literal) first, so /detector/{Id}/findings/get wins over /detector/{Id}.
    routes.sort(key=lambda r: -len(r[1].pattern))
    return routes


def _shape(name: str) -> dict:
    return _model()["shapes"][name]


def _parse_ts(value: Any) -> Optional[datetime]:
    """ISO-8601 string / epoch-ms number / datetime -> aware datetime (None if not a timestamp)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str) and len(value) >= 10 and value[:4].isdigit() and value[4:5] == "-":
        text = value.strip().replace(" ", "T")
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", text)
            if not m:
                return None
            frac = (m.group(2) or ".0")[:7]
            try:
                dt = datetime.fromisoformat(m.group(1) + frac + (m.group(3) or ""))
            except ValueError:
                return None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return None


def _iso_ms(dt: datetime) -> str:
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _epoch_ms(dt: datetime) -> int:
    return int(round((dt - _EPOCH).total_seconds() * 1000))


def _to_wire(value: Any, shape_name: str) -> Any:
    """Convert a canonical (EventBridge-detail) value into the API wire form for ``shape_name``."""
    shape = _shape(shape_name)
    stype = shape["type"]
    if value is None:
        return None
    if stype == "structure":
        if not isinstance(value, dict):
            return value
        if shape_name == "ServiceAdditionalInfo":
            if isinstance(value.get("value"), str) and set(value) <= {"value", "type"}:
                return dict(value)  # already in API form
            return {"value": json.dumps(value, sort_keys=True, default=str), "type": "default"}
        by_wire = {m.get("locationName", n): (n, m) for n, m in shape.get("members", {}).items()}
        out = {}
        for key, sub in value.items():
            if key in by_wire:
                member = by_wire[key][1]
                out[key] = _to_wire(sub, member["shape"])
            else:
                out[key] = sub  # unknown to the model: botocore ignores it, keep it verbatim
        return out
    if stype == "list":
        if not isinstance(value, list):
            value = [value]
        return [_to_wire(v, shape["member"]["shape"]) for v in value]
    if stype == "map":
        if not isinstance(value, dict):
            return value
        return {str(k): _to_wire(v, shape["value"]["shape"]) for k, v in value.items()}
    if stype in ("double", "float"):
        return float(value)
    if stype in ("integer", "long"):
        return int(value)
    if stype == "boolean":
        if isinstance(value, str):
            return value.lower() == "true"
        return bool(value)
    if stype == "timestamp":
        dt = _parse_ts(value)
        return (dt - _EPOCH).total_seconds() if dt else value
    if stype == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # EventBridge carries e.g. launchTime as epoch ms although the API models it as an ISO string.
            if abs(value) > 10**11:
                return _iso_ms(_EPOCH + timedelta(milliseconds=value))
            return str(value)
        return value
    return value


def finding_to_wire(finding: dict) -> dict:
    """Canonical camelCase finding -> GetFindings wire JSON (see module docstring)."""
    return _to_wire(finding, "Finding")


# --------------------------------------------------------------------------------------------------------
# criteria
# --------------------------------------------------------------------------------------------------------
def _resolve(obj: Any, path: str) -> list:
    """All non-null values at dotted ``path`` in ``obj`` (lists are flattened at every level)."""
    current = [obj]
    for part in path.split("."):
        nxt: list = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    return [v for v in current if v is not None]


def _as_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _eq(value: Any, wanted: str) -> bool:
    if _as_str(value) == wanted:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == wanted.lower()
    return False


def _as_number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    dt = _parse_ts(value)
    if dt is not None:
        return float(_epoch_ms(dt))
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_CMP = {
    "greaterThan": lambda a, b: a > b,
    "gt": lambda a, b: a > b,
    "greaterThanOrEqual": lambda a, b: a >= b,
    "gte": lambda a, b: a >= b,
    "lessThan": lambda a, b: a < b,
    "lt": lambda a, b: a < b,
    "lessThanOrEqual": lambda a, b: a <= b,
    "lte": lambda a, b: a <= b,
}


def _condition_holds(values: list, cond: dict) -> bool:
    for op, arg in cond.items():
        if arg is None:
            continue
        if op in ("equals", "eq"):
            wanted = [str(a) for a in (arg if isinstance(arg, list) else [arg])]
            if not any(_eq(v, w) for v in values for w in wanted):
                return False
        elif op in ("notEquals", "neq"):
            wanted = [str(a) for a in (arg if isinstance(arg, list) else [arg])]
            if any(_eq(v, w) for v in values for w in wanted):
                return False
        elif op in _CMP:
            nums = [n for n in (_as_number(v) for v in values) if n is not None]
            if not any(_CMP[op](n, float(arg)) for n in nums):
                return False
        else:
            raise _ApiError(
                400,
                "BadRequestException",
                f"The request is rejected because the condition {op!r} is not supported.",
            )
    return True


def _matches(finding: dict, criterion: dict) -> bool:
    for path, cond in (criterion or {}).items():
        if not isinstance(cond, dict):
            raise _ApiError(
                400,
                "BadRequestException",
                f"The request is rejected because criterion {path!r} is malformed.",
            )
        if not _condition_holds(_resolve(finding, path), cond):
            return False
    return True


def _sort_key(finding: dict, attribute: str):
    values = _resolve(finding, attribute)
    if not values:
        return (2, 0.0, "")
    v = values[0]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    dt = _parse_ts(v)
    if dt is not None:
        return (0, float(_epoch_ms(dt)), "")
    return (1, 0.0, _as_str(v))


def _sorted(findings: list[dict], sort_criteria: Optional[dict]) -> list[dict]:
    if not sort_criteria or not sort_criteria.get("attributeName"):
        return list(findings)
    attr = sort_criteria["attributeName"]
    desc = str(sort_criteria.get("orderBy", "ASC")).upper() == "DESC"
    present = [f for f in findings if _resolve(f, attr)]
    missing = [f for f in findings if not _resolve(f, attr)]
    return sorted(present, key=lambda f: _sort_key(f, attr), reverse=desc) + missing


# --------------------------------------------------------------------------------------------------------
# emulator
# --------------------------------------------------------------------------------------------------------
class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Call:
    """One request as seen by the emulator."""

    operation: str
    region: str
    detector_id: Optional[str]
    body: Any
    status: int
    time: float
    method: str = ""
    path: str = ""
    query: dict = field(default_factory=dict)
    error_code: Optional[str] = None


@dataclass
class _Detector:
    detector_id: str
    findings: dict = field(default_factory=dict)  # id -> canonical finding (insertion ordered)


class GuardDutyEmulator:
    """GuardDuty rest-json emulator; see the module docstring."""

    def __init__(self, *, latency: float = 0.0, account_id: str = "123456789012"):
        self.latency = latency
        self.account_id = account_id
        self.calls: list[Call] = []
        self.url = ""
        self._lock = threading.RLock()
        self._regions: dict[str, dict[str, _Detector]] = {}
        self._snapshots: dict[str, list[str]] = {}
        self._throttle: list[tuple[str, int]] = []
        self._fail: list[int] = []
        self._deny_all = False
        self._deny_regions: set[str] = set()
        self._triggers: list[tuple[int, str, Callable[[], None]]] = []
        self._seen: dict[str, int] = {}
        self._sample_seq = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> GuardDutyEmulator:
        if self._server is not None:
            return self
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                emulator._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

            def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="guardduty-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> GuardDutyEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- state -----------------------------------------------------------------------------------
    def add_detector(self, region: str, detector_id: Optional[str] = None) -> str:
        """Create a detector in ``region`` (id: 32 hex chars unless given) and return its id."""
        detector_id = detector_id or uuid.uuid4().hex
        with self._lock:
            self._regions.setdefault(region, {}).setdefault(detector_id, _Detector(detector_id))
        return detector_id

    def add_findings(self, region: str, detector_id: str, findings: Iterable[dict]) -> None:
        """Store canonical camelCase findings (a finding with an existing id replaces it in place)."""
        with self._lock:
            det = self._detector(region, detector_id, create=True)
            for f in findings:
                f = copy.deepcopy(f)
                det.findings[f["id"]] = f

    def findings(self, region: str, detector_id: str) -> list[dict]:
        """Deep copies of the stored canonical findings, in insertion order."""
        with self._lock:
            det = self._detector(region, detector_id, create=False)
            return copy.deepcopy(list(det.findings.values())) if det else []

    def count(self, operation: Optional[str] = None, region: Optional[str] = None) -> int:
        """Number of logged calls, optionally restricted to an operation and/or region."""
        with self._lock:
            return sum(
                1
                for c in self.calls
                if (operation is None or c.operation == operation) and (region is None or c.region == region)
            )

    # ---- knobs -----------------------------------------------------------------------------------
    def throttle_next(self, n: int, code: str = "ThrottlingException", status: int = 429) -> None:
        """The next ``n`` requests answer a throttling error (``code``/``status``)."""
        with self._lock:
            self._throttle.extend([(code, status)] * n)

    def deny(self, region: Optional[str] = None) -> None:
        """Answer every call (in ``region``, or everywhere) with 403 AccessDeniedException."""
        with self._lock:
            if region is None:
                self._deny_all = True
            else:
                self._deny_regions.add(region)

    def allow(self) -> None:
        """Undo :meth:`deny`."""
        with self._lock:
            self._deny_all = False
            self._deny_regions.clear()

    def after(self, calls: int, operation: str, action: Callable[[], None]) -> None:
        """Run ``action`` (e.g. a knob) when call ``calls + 1`` of ``operation`` arrives, before it is
        served, as ``StationSim.after`` does: deterministic mid-run faults without sleeps."""
        with self._lock:
            self._triggers.append((int(calls), operation, action))

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` requests answer ``status`` InternalServerErrorException."""
        with self._lock:
            self._fail.extend([status] * n)

    # ---- internals -------------------------------------------------------------------------------
    def _detector(self, region: str, detector_id: str, *, create: bool) -> Optional[_Detector]:
        dets = self._regions.get(region, {})
        if detector_id not in dets:
            if not create:
                return None
            self.add_detector(region, detector_id)
            dets = self._regions[region]
        return dets[detector_id]

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        started = time.time()
        split = urlsplit(req.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        region = "us-east-1"
        m = _CRED_RE.search(req.headers.get("Authorization", ""))
        if m:
            region = m.group(1)
        operation, params = "Unknown", {}
        for method, rx, name in _routes():
            hit = rx.match(path)
            if hit and method == req.command:
                operation, params = name, hit.groupdict()
                break
        detector_id = params.get("DetectorId")
        body: Any = {}
        status, payload, error_code = 200, {}, None
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                    raise _ApiError(
                        400, "BadRequestException", "The request body is not valid JSON."
                    ) from None
            if self.latency:
                time.sleep(self.latency)
            self._check_faults(region, operation)
            payload = self._dispatch(
                operation, region, detector_id, body if isinstance(body, dict) else {}, query
            )
        except _ApiError as err:
            status, error_code = err.status, err.code
            payload = {"message": err.message, "__type": err.code}
        except Exception as err:  # pragma: no cover - emulator bug: surface as a 500
            status, error_code = 500, "InternalServerErrorException"
            payload = {"message": f"emulator error: {err!r}", "__type": error_code}
        data = json.dumps(payload).encode()
        with self._lock:
            self.calls.append(
                Call(
                    operation,
                    region,
                    detector_id,
                    body,
                    status,
                    started,
                    req.command,
                    path,
                    query,
                    error_code,
                )
            )
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_code:
            req.send_header("x-amzn-ErrorType", error_code)
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)

    def _check_faults(self, region: str, operation: str) -> None:
        with self._lock:
            seen = self._seen[operation] = self._seen.get(operation, 0) + 1
            for trigger in [t for t in self._triggers if t[1] == operation and t[0] == seen - 1]:
                self._triggers.remove(trigger)
                trigger[2]()
            if self._deny_all or region in self._deny_regions:
                raise _ApiError(
                    403,
                    "AccessDeniedException",
                    f"User: arn:aws:iam::{self.account_id}:user/testing is not authorized to perform: "
                    f"guardduty:{operation}",
                )
            if self._throttle:
                code, status = self._throttle.pop(0)
                raise _ApiError(status, code, "Rate exceeded")
            if self._fail:
                status = self._fail.pop(0)
                raise _ApiError(status, "InternalServerErrorException", "Internal server error")

    def _dispatch(
        self, operation: str, region: str, detector_id: Optional[str], body: dict, query: dict
    ) -> dict:
        if operation not in _IMPLEMENTED:
            raise _ApiError(404, "ResourceNotFoundException", f"The emulator does not implement {operation}.")
        if operation == "ListDetectors":
            return self._list_detectors(region, query)
        with self._lock:
            det = self._detector(region, detector_id or "", create=False)
        if det is None:
            raise _ApiError(400, "BadRequestException", DETECTOR_NOT_OWNED)
        handler = getattr(self, "_op_" + re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        return handler(region, det, body)

    @staticmethod
    def _max_results(value: Any, *, default: int = _MAX_PAGE, maximum: int = _MAX_PAGE) -> int:
        if value is None or value == "":
            return default
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = -1
        if not 1 <= n <= maximum:
            raise _ApiError(
                400,
                "BadRequestException",
                f"The request is rejected because the input maxResults value {value} is out of range "
                f"(valid range: 1-{maximum}).",
            )
        return n

    @staticmethod
    def _encode_token(snapshot: str, offset: int) -> str:
        return base64.urlsafe_b64encode(f"{snapshot}:{offset}".encode()).decode()

    def _decode_token(self, token: str) -> tuple[str, int]:
        try:
            snapshot, offset = base64.urlsafe_b64decode(token.encode()).decode().rsplit(":", 1)
            return snapshot, int(offset)
        except Exception:
            raise _ApiError(400, "BadRequestException", _INVALID_TOKEN) from None

    def _page(
        self, ids: list[str], max_results: int, token: Optional[str]
    ) -> tuple[list[str], Optional[str]]:
        with self._lock:
            if token:
                snap, offset = self._decode_token(token)
                if snap not in self._snapshots or offset < 0:
                    raise _ApiError(400, "BadRequestException", _INVALID_TOKEN)
                ids = self._snapshots[snap]
            else:
                snap, offset = uuid.uuid4().hex, 0
                self._snapshots[snap] = ids
        page = ids[offset : offset + max_results]
        nxt = offset + max_results
        return page, (self._encode_token(snap, nxt) if nxt < len(ids) else None)

    def _list_detectors(self, region: str, query: dict) -> dict:
        max_results = self._max_results(query.get("maxResults"))
        with self._lock:
            ids = list(self._regions.get(region, {}))
        page, token = self._page(ids, max_results, query.get("nextToken"))
        out: dict = {"detectorIds": page}
        if token:
            out["nextToken"] = token
        return out

    def _filtered(self, det: _Detector, body: dict) -> list[dict]:
        criterion = ((body.get("findingCriteria") or {}).get("criterion")) or {}
        with self._lock:
            stored = list(det.findings.values())
        return [f for f in stored if _matches(f, criterion)]

    def _op_list_findings(self, region: str, det: _Detector, body: dict) -> dict:
        max_results = self._max_results(body.get("maxResults"))
        # A follow-up page is served from the first page's snapshot: don't filter and sort again.
        ids = [] if body.get("nextToken") else [
            f["id"] for f in _sorted(self._filtered(det, body), body.get("sortCriteria"))]
        page, token = self._page(ids, max_results, body.get("nextToken"))
        out: dict = {"findingIds": page}
        if token:
            out["nextToken"] = token
        return out

    @staticmethod
    def _finding_ids(body: dict) -> list[str]:
        ids = body.get("findingIds")
        if ids is None:
            raise _ApiError(
                400, "BadRequestException", "The request is rejected because findingIds is missing."
            )
        if len(ids) > _MAX_IDS:
            raise _ApiError(
                400,
                "BadRequestException",
                f"The request is rejected because the number of findingIds ({len(ids)}) exceeds {_MAX_IDS}.",
            )
        return ids

    def _op_get_findings(self, region: str, det: _Detector, body: dict) -> dict:
        ids = self._finding_ids(body)
        with self._lock:
            found = [copy.deepcopy(det.findings[i]) for i in dict.fromkeys(ids) if i in det.findings]
        found = _sorted(found, body.get("sortCriteria"))
        return {"findings": [finding_to_wire(f) for f in found]}

    def _op_get_findings_statistics(self, region: str, det: _Detector, body: dict) -> dict:
        types = body.get("findingStatisticTypes")
        group_by = body.get("groupBy")
        if types and group_by:
            raise _ApiError(
                400,
                "BadRequestException",
                "The request is rejected because either findingStatisticTypes or groupBy must be specified, "
                "not both.",
            )
        if not types and not group_by:
            raise _ApiError(
                400,
                "BadRequestException",
                "The request is rejected because findingStatisticTypes or groupBy is required.",
            )
        findings = self._filtered(det, body)
        stats: dict = {}
        if types:
            if any(t != "COUNT_BY_SEVERITY" for t in types):
                raise _ApiError(400, "BadRequestException", f"Unsupported findingStatisticTypes {types}.")
            counts: dict[str, int] = {}
            for f in findings:
                key = str(float(f.get("severity", 0)))
                counts[key] = counts.get(key, 0) + 1
            stats["countBySeverity"] = counts
            return {"findingStatistics": stats}
        max_results = self._max_results(body.get("maxResults"), default=25, maximum=100)
        desc = str(body.get("orderBy") or "DESC").upper() == "DESC"
        keyers = {
            "SEVERITY": ("groupedBySeverity", "severity", lambda f: float(f.get("severity", 0))),
            "FINDING_TYPE": ("groupedByFindingType", "findingType", lambda f: f.get("type")),
            "ACCOUNT": ("groupedByAccount", "accountId", lambda f: f.get("accountId")),
        }
        if group_by not in keyers:
            raise _ApiError(400, "BadRequestException", f"The emulator does not support groupBy {group_by}.")
        out_key, name, keyer = keyers[group_by]
        groups: dict[Any, dict] = {}
        for f in findings:
            k = keyer(f)
            g = groups.setdefault(k, {name: k, "totalFindings": 0, "_last": None})
            g["totalFindings"] += 1
            ts = _parse_ts(f.get("updatedAt"))
            if ts and (g["_last"] is None or ts > g["_last"]):
                g["_last"] = ts
        rows = sorted(groups.values(), key=lambda g: g["totalFindings"], reverse=desc)[:max_results]
        for g in rows:
            last = g.pop("_last")
            if last is not None:
                g["lastGeneratedAt"] = (last - _EPOCH).total_seconds()
        stats[out_key] = rows
        return {"findingStatistics": stats}

    def _op_create_sample_findings(self, region: str, det: _Detector, body: dict) -> dict:
        types = body.get("findingTypes") or list(_DEFAULT_SAMPLE_TYPES)
        now = datetime.now(timezone.utc)
        new = []
        with self._lock:
            for t in types:
                self._sample_seq += 1
                f = make_finding(
                    10**6 + self._sample_seq,
                    region=region,
                    account_id=self.account_id,
                    detector_id=det.detector_id,
                    type=t,
                    updated_at=now,
                    sample=True,
                )
                new.append(f)
            for f in new:
                det.findings[f["id"]] = f
        return {}

    def _op_archive_findings(self, region: str, det: _Detector, body: dict) -> dict:
        ids = self._finding_ids(body)
        now = _iso_ms(datetime.now(timezone.utc))
        with self._lock:
            for i in ids:
                f = det.findings.get(i)
                if f is not None:
                    f.setdefault("service", {})["archived"] = True
                    f["updatedAt"] = now
        return {}


# --------------------------------------------------------------------------------------------------------
# finding factories
# --------------------------------------------------------------------------------------------------------
_BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)


def make_finding(
    i: int,
    *,
    region: str = "us-east-1",
    account_id: str = "123456789012",
    detector_id: str = "det",
    severity: float = 5.0,
    type: str = "Recon:EC2/PortProbeUnprotectedPort",  # noqa: A002 - mirrors the GuardDuty field name
    updated_at: Any = None,
    archived: bool = False,
    sample: bool = False,
) -> dict:
    """A realistic canonical (EventBridge ``detail``) finding with a deterministic id derived from ``i``.

    ``updated_at`` may be a datetime, an ISO string or epoch ms; by default ``2024-01-01T00:00Z + i minutes``.
    ``createdAt`` is one hour before ``updatedAt``.
    """
    fid = hashlib.md5(f"gd-finding-{i}".encode()).hexdigest()  # noqa: S324 - not security relevant
    updated = _parse_ts(updated_at) if updated_at is not None else _BASE_TIME + timedelta(minutes=i)
    if updated is None:
        raise ValueError(f"unparseable updated_at {updated_at!r}")
    created = updated - timedelta(hours=1)
    last_seen = updated - timedelta(minutes=1)
    remote_ip = f"198.51.100.{i % 254 + 1}"
    local_ip = f"10.0.{(i // 254) % 256}.{i % 254 + 1}"
    public_ip = f"203.0.113.{(i * 7) % 254 + 1}"
    domain = f"c2-{i}.malicious.example.com"
    instance_id = "i-" + hashlib.md5(f"instance-{i}".encode()).hexdigest()[:17]  # noqa: S324
    remote = {
        "ipAddressV4": remote_ip,
        "organization": {"asn": "64496", "asnOrg": "EXAMPLE-AS", "isp": "Example ISP", "org": "Example Org"},
        "country": {"countryName": "Netherlands", "countryCode": "NL"},
        "city": {"cityName": "Amsterdam"},
        "geoLocation": {"lat": 52.37, "lon": 4.89},
    }
    if "PortProbe" in type:
        action = {
            "actionType": "PORT_PROBE",
            "portProbeAction": {
                "blocked": False,
                "portProbeDetails": [
                    {
                        "localPortDetails": {"port": 22, "portName": "SSH"},
                        "localIpDetails": {"ipAddressV4": local_ip},
                        "remoteIpDetails": remote,
                    }
                ],
            },
        }
    else:
        action = {
            "actionType": "NETWORK_CONNECTION",
            "networkConnectionAction": {
                "blocked": False,
                "connectionDirection": "OUTBOUND",
                "localPortDetails": {"port": 40000 + i % 20000, "portName": "Unknown"},
                "protocol": "TCP",
                "localIpDetails": {"ipAddressV4": local_ip},
                "remoteIpDetails": remote,
                "remotePortDetails": {"port": 443, "portName": "HTTPS"},
            },
        }
    additional: dict = {"domain": domain, "threatListName": "ProofPoint", "unusualProtocol": "TCP"}
    if sample:
        additional["sample"] = True
    title = f"{type} activity on EC2 instance {instance_id}"
    return {
        "schemaVersion": "2.0",
        "accountId": account_id,
        "region": region,
        "partition": "aws",
        "id": fid,
        "arn": f"arn:aws:guardduty:{region}:{account_id}:detector/{detector_id}/finding/{fid}",
        "type": type,
        "resource": {
            "resourceType": "Instance",
            "instanceDetails": {
                "instanceId": instance_id,
                "instanceType": "t3.micro",
                "launchTime": _epoch_ms(created - timedelta(days=30)),
                "platform": None,
                "productCodes": [],
                "iamInstanceProfile": {
                    "arn": f"arn:aws:iam::{account_id}:instance-profile/app-{i % 5}",
                    "id": "AIPA" + hashlib.md5(f"profile-{i % 5}".encode()).hexdigest()[:17].upper(),  # noqa: S324
                },
                "networkInterfaces": [
                    {
                        "ipv6Addresses": [],
                        "networkInterfaceId": f"eni-{instance_id[2:]}",
                        "privateDnsName": f"ip-{local_ip.replace('.', '-')}.ec2.internal",
                        "privateIpAddress": local_ip,
                        "privateIpAddresses": [
                            {
                                "privateDnsName": f"ip-{local_ip.replace('.', '-')}.ec2.internal",
                                "privateIpAddress": local_ip,
                            }
                        ],
                        "publicDnsName": f"ec2-{public_ip.replace('.', '-')}.compute-1.amazonaws.com",
                        "publicIp": public_ip,
                        "securityGroups": [{"groupId": "sg-0123456789abcdef0", "groupName": "default"}],
                        "subnetId": "subnet-0123456789abcdef0",
                        "vpcId": "vpc-0123456789abcdef0",
                    }
                ],
                "tags": [{"key": "Name", "value": f"web-{i}"}],
                "instanceState": "running",
                "availabilityZone": f"{region}a",
                "imageId": "ami-0123456789abcdef0",
                "imageDescription": "Amazon Linux 2",
            },
        },
        "service": {
            "serviceName": "guardduty",
            "detectorId": detector_id,
            "action": action,
            "resourceRole": "TARGET" if "PortProbe" in type else "ACTOR",
            "additionalInfo": additional,
            "eventFirstSeen": _iso_ms(created),
            "eventLastSeen": _iso_ms(last_seen),
            "archived": archived,
            "count": i % 7 + 1,
        },
        "severity": severity,
        "createdAt": _iso_ms(created),
        "updatedAt": _iso_ms(updated),
        "title": ("[SAMPLE] " if sample else "") + title,
        "description": f"{title} (remote {remote_ip}, {domain}).",
    }


def to_eventbridge(finding: dict) -> dict:
    """Wrap a canonical finding as the EventBridge event GuardDuty publishes."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": finding.get("accountId", ""),
        "time": (finding.get("updatedAt") or _iso_ms(datetime.now(timezone.utc)))[:19] + "Z",
        "region": finding.get("region", ""),
        "resources": [],
        "detail": copy.deepcopy(finding),
    }
