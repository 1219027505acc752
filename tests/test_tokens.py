"""A token endpoint that answers 200 without a usable ``access_token`` is one clear error, not a token."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import write_jsonl
from tests.sims.guardduty import make_finding, to_eventbridge


class _TokenEndpoint(BaseHTTPRequestHandler):
    body = b"{}"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_endpoint():
    """An OAuth endpoint on 127.0.0.1 whose 200 answers are whatever the test sets."""
    handler = type("Handler", (_TokenEndpoint,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/oauth/token"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", [{}, {"access_token": None}, {"access_token": ""}, {"access_token": 42}, []])
def test_a_token_answer_without_a_token_stops_the_run_with_one_line(cli, sim, tmp_path, token_endpoint, answer):
    handler, url = token_endpoint
    handler.body = json.dumps(answer).encode()
    path = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(make_finding(1))])
    cli.station(sim)
    result = cli("send", "--json", str(path), env={"TRUSTAR_AUTH_ENDPOINT": url})
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("gdtrustar:")]
    assert any("no access_token" in line for line in lines), result.stderr
    assert not any("refused" in line and "OAuth tokens" in line for line in lines), result.stderr  # not "expired"
    assert sim.reports_by_external_id() == {}  # nothing was sent with a made-up token
    assert result.code != 0
