"""A counting, fault-injecting HTTP proxy in front of moto's S3 (tests and benchmarks).

moto in server mode stores and serves the bucket; this proxy sits between boto3 and moto on
127.0.0.1 (``AWS_ENDPOINT_URL_S3=proxy.url``), forwards every request unchanged, and records it
(:attr:`S3Proxy.calls`), which is how tests and the benchmark count ``ListObjectsV2`` and
``GetObject`` calls. It also answers what moto cannot model, with S3's own XML error bodies so
that botocore's real parser builds the ``ClientError``:

* ``refuse(key, code, message, status)``: every ``GetObject`` of ``key`` gets that error, e.g.
  the ``AccessDenied`` S3 returns when KMS refuses to decrypt (moto never consults KMS on reads);
* ``fail_next(n, op, status, code)``: the next ``n`` calls of ``op`` fail (e.g. 503 SlowDown);
* ``cut_next(n, after)``: the next ``n`` full-object ``GetObject`` bodies are cut after ``after``
  bytes (headers promise the whole object, then the connection closes);
* ``after(k, op, action)``: run ``action`` when call ``k + 1`` of ``op`` arrives, before it is
  served (deterministic mid-run triggers, like ``StationSim.after``).
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class Call:
    """One request as the proxy saw it."""

    op: str
    method: str
    bucket: str
    key: str
    query: dict
    status: int
    headers: dict


def operation(method: str, key: str, query: dict) -> str:
    """The S3 operation a request is (enough of them for these tests)."""
    if method == "GET" and not key:
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject",
            "POST": "Post"}.get(method, method)


def error_body(code: str, message: str, key: str = "") -> bytes:
    """S3's XML error document."""
    from xml.sax.saxutils import escape

    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message><Key>{escape(key)}</Key>"
            f"<RequestId>4442587FB7D0A2F9</RequestId><HostId>proxy</HostId></Error>").encode()


class S3Proxy:
    """Forwards to ``upstream`` (moto's URL); see the module docstring."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._refusals: dict[str, tuple[int, str, str]] = {}
        self._failures: list[list] = []  # [remaining, op, status, code]
        self._cuts: list[list] = []  # [remaining, after]
        self._triggers: list[tuple[int, str, Callable[[], None]]] = []
        self._seen: Counter = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- knobs ---------------------------------------------------------------------------------
    def refuse(self, key: str, code: str = "AccessDenied", message: str = "Access Denied", status: int = 403) -> None:
        with self._lock:
            self._refusals[key] = (status, code, message)

    def allow(self, key: str) -> None:
        with self._lock:
            self._refusals.pop(key, None)

    def fail_next(self, n: int, op: str = "GetObject", status: int = 503, code: str = "SlowDown") -> None:
        with self._lock:
            self._failures.append([n, op, status, code])

    def cut_next(self, n: int, after: int) -> None:
        with self._lock:
            self._cuts.append([n, after])

    def after(self, calls: int, op: str, action: Callable[[], None]) -> None:
        with self._lock:
            self._triggers.append((calls, op, action))

    def count(self, op: str, status: Optional[int] = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.op == op and (status is None or c.status == status))

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- serving -------------------------------------------------------------------------------
    def _plan(self, op: str, key: str, ranged: bool) -> tuple[Optional[tuple[int, str, str]], Optional[int]]:
        """(error to answer, byte count to cut the body at) for this call; runs triggers. Lock held."""
        self._seen[op] += 1
        for trigger in list(self._triggers):
            if trigger[1] == op and self._seen[op] > trigger[0]:
                self._triggers.remove(trigger)
                trigger[2]()
        if op == "GetObject" and key in self._refusals:
            return self._refusals[key], None
        for rule in self._failures:
            if rule[1] == op and rule[0] > 0:
                rule[0] -= 1
                return (rule[2], rule[3], "Please reduce your request rate." if rule[2] == 503 else "We "
                        "encountered an internal error. Please try again."), None
        if op == "GetObject" and not ranged:
            for rule in self._cuts:
                if rule[0] > 0:
                    rule[0] -= 1
                    return None, rule[1]
        return None, None

    def _handler(self) -> type:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                path = unquote(parts.path).lstrip("/")
                bucket, _, key = path.partition("/")
                query = parse_qs(parts.query, keep_blank_values=True)
                op = operation(self.command, key, query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    error, cut = proxy._plan(op, key, "Range" in self.headers)
                if error is not None:
                    status, code, message = error
                    self._answer(status, {"Content-Type": "application/xml"}, error_body(code, message, key))
                else:
                    status = self._forward(body, cut)
                with proxy._lock:
                    proxy.calls.append(Call(op, self.command, bucket, key, query, status, dict(self.headers)))

            def _answer(self, status: int, headers: dict, payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _forward(self, body: bytes, cut: Optional[int]) -> int:
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                conn.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command == "HEAD":
                    return response.status
                if cut is not None and cut < len(payload):
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return response.status
                self.wfile.write(payload)
                return response.status

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        return Handler
