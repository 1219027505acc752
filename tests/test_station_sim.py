"""Drive the real trustar 0.4.3 SDK (and raw `requests`) against the Station simulator over real sockets."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
from trustar import Report, TruStar

from tests.pacesim import Clock
from tests.sims.station import TOO_MANY_INDICATORS, StationSim, count_indicators

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _quiet_sdk_logging():
    """The SDK logs JSON lines to stdout at INFO; raise its loggers to WARNING for this module."""
    saved = {}
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("trustar"):
            lg = logging.getLogger(name)
            saved[name] = lg.level
            lg.setLevel(logging.WARNING)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def sim():
    with StationSim() as s:
        yield s


def make_ts(sim: StationSim, **extra) -> TruStar:
    config = {
        "user_api_key": sim.api_key,
        "user_api_secret": sim.api_secret,
        "auth_endpoint": sim.auth_endpoint,
        "api_endpoint": sim.api_endpoint,
        "client_metatag": "test",
    }
    config.update(extra)
    return TruStar(config=config)


@pytest.fixture
def ts(sim):
    return make_ts(sim)


def token(sim: StationSim) -> str:
    r = requests.post(
        sim.auth_endpoint,
        auth=(sim.api_key, sim.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=5,
    )
    assert r.status_code == 200
    return r.json()["access_token"]


def api(sim: StationSim, method: str, path: str, tok: str, body=None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {tok}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    return requests.request(
        method, f"{sim.api_endpoint}/{path}", headers=headers, params=params or None, data=data, timeout=5
    )


def report_body(ext: str | None = "ext-1", enclave: str = "enc-a", **over) -> dict:
    body = {
        "title": "GuardDuty finding",
        "reportBody": "Recon from 198.51.100.7",
        "timeBegan": "2024-01-02T03:04:05.123000+00:00",
        "externalUrl": "arn:aws:guardduty:us-east-1:123:detector/d/finding/f",
        "distributionType": "ENCLAVE",
        "externalTrackingId": ext,
        "enclaveIds": [enclave],
        "created": None,
        "updated": None,
        "id": None,
    }
    body.update(over)
    return body


def upsert(ts: TruStar, body: dict, mode: str = "OVERRIDE") -> requests.Response:
    return ts._client.post(
        "reports/upsert", params={"idType": "external", "mode": mode}, data=json.dumps(body), timeout=5
    )


# ---------------------------------------------------------------------------------------------- SDK basics
def test_enclaves_and_token_via_sdk(sim, ts):
    enclaves = {e.id: e for e in ts.get_user_enclaves()}
    assert set(enclaves) == {"enc-a", "enc-b", "enc-ro"}
    assert enclaves["enc-a"].create and not enclaves["enc-ro"].create and not enclaves["enc-ro"].update
    assert [c.kind for c in sim.calls] == ["token", "enclaves"]
    enclave_call = sim.calls[1]
    assert enclave_call.status == 200 and enclave_call.token in sim.tokens
    assert sim.count("token") == 1 and sim.count(status=200) == 2


def test_bad_credentials(sim):
    ts = make_ts(sim, user_api_secret="wrong")
    with pytest.raises(requests.HTTPError, match="401 Client Error .*unable to get token"):
        ts.get_user_enclaves()
    r = requests.post(sim.auth_endpoint, auth=("test-key", "nope"), data={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json() == {
        "error": "unauthorized",
        "error_description": "Bad credentials",
    }


def test_tokens_random_and_response_headers(sim):
    t1, t2 = token(sim), token(sim)
    assert t1 != t2 and len(t1) == 32
    r = requests.post(
        sim.auth_endpoint, auth=("test-key", "test-secret"), data={"grant_type": "client_credentials"}
    )
    assert r.json()["token_type"] == "bearer" and r.json()["expires_in"] == 600
    uuid.UUID(r.headers["Trace-Id"])
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_invalid_and_missing_token(sim):
    r = api(sim, "GET", "enclaves", "not-a-token")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_token", "error_description": "Invalid oauth2 access token"}
    r = requests.get(f"{sim.api_endpoint}/enclaves", timeout=5)
    assert r.status_code == 401


def test_request_quotas_via_sdk(sim, ts):
    sim.quota_per_minute = 100
    ts.get_user_enclaves()
    (quota,) = ts.get_request_quotas()
    assert quota.max_requests == 100 and quota.used_requests == 2 and quota.time_window == 60000


def test_submit_get_update_delete_via_sdk(sim, ts):
    report = Report(
        title="Recon:EC2/PortProbeUnprotectedPort",
        body="Probe from 198.51.100.7 to evil.example.com",
        time_began="2017-10-31T23:16:23.824Z",
        external_id="enc-a|finding-1",
        external_url="arn:aws:guardduty:us-east-1:1:detector/d/finding/f1",
        enclave_ids=["enc-a"],
    )
    submitted = ts.submit_report(report)
    assert str(uuid.UUID(submitted.id)) == submitted.id
    assert sim.calls[-1].kind == "submit" and sim.calls[-1].status == 200

    got = ts.get_report_details("enc-a|finding-1", id_type="external")
    assert got.id == submitted.id and got.title == report.title and got.body == report.body
    assert got.time_began == 1509491783824  # ISO in, int ms out
    assert got.external_id == "enc-a|finding-1" and got.enclave_ids == ["enc-a"] and got.is_enclave
    assert isinstance(got.created, int) and isinstance(got.updated, int)

    got.title = "updated title"
    ts.update_report(got)  # internal id (got.id is set); SDK sends the full dict incl. created/updated
    [stored] = sim.reports
    assert stored["title"] == "updated title" and stored["updated"] > stored["created"]
    assert sim.calls[-1].query == {"idType": "internal"}

    # update through the external id, as gdtrustar does when only the external id is known
    by_ext = Report(
        title="third",
        body="b",
        time_began=1509491783000,
        external_id="enc-a|finding-1",
        external_url="u",
        enclave_ids=["enc-a"],
    )
    ts.update_report(by_ext)
    assert sim.reports[0]["title"] == "third" and sim.calls[-1].query == {"idType": "external"}

    ts.delete_report("enc-a|finding-1", id_type="external")
    assert sim.reports == []
    with pytest.raises(requests.HTTPError, match="404 Client Error .*Report not found"):
        ts.get_report_details("enc-a|finding-1", id_type="external")


def test_put_requires_full_report(sim, ts):
    rid = ts.submit_report(Report(title="t", body="b", external_id="e", enclave_ids=["enc-a"])).id
    partial = Report(id=rid, title="t2", body="b2", enclave_ids=["enc-a"])  # no external url / id / time
    with pytest.raises(requests.HTTPError, match="400 Client Error"):
        ts.update_report(partial)
    missing = Report(
        title="t",
        body="b",
        time_began=1509491783000,
        external_id="nope",
        external_url="u",
        enclave_ids=["enc-a"],
    )
    with pytest.raises(requests.HTTPError, match="404"):
        ts.update_report(missing)


def test_duplicate_submit_is_stored_twice(sim, ts):
    for _ in range(2):
        ts.submit_report(Report(title="t", body="b", external_id="dup", enclave_ids=["enc-a"]))
    ts.submit_report(Report(title="t", body="b", external_id="dup", enclave_ids=["enc-b"]))
    by_ext = sim.reports_by_external_id()
    assert len(by_ext[("enc-a", "dup")]) == 2 and len(by_ext[("enc-b", "dup")]) == 1


@pytest.mark.parametrize(
    "over, status, fragment",
    [
        ({"enclaveIds": ["enc-ro"]}, 403, "Forbidden"),
        ({"enclaveIds": ["enc-nope"]}, 403, "Forbidden"),
        ({"enclaveIds": ["enc-a", "enc-b"]}, 400, "exactly one"),
        ({"enclaveIds": []}, 400, "exactly one"),
        ({"title": ""}, 400, "title"),
        ({"reportBody": None}, 400, "reportBody"),
        ({"timeBegan": "2024-01-02T03:04:05"}, 400, "timeBegan"),  # no zone
        ({"timeBegan": "yesterday"}, 400, "timeBegan"),
        ({"externalUrl": "x" * 501}, 400, "externalUrl"),
    ],
)
def test_submit_validation(sim, over, status, fragment):
    r = api(sim, "POST", "reports", token(sim), report_body(**over))
    assert r.status_code == status, r.text
    assert fragment in r.text and r.json()["status"] == status
    assert sim.reports == []


@pytest.mark.parametrize("tb", [1509491783824, "2017-10-31T23:16:23Z", "2017-10-31T23:16:23+0000", None])
def test_submit_time_began_formats(sim, tb):
    r = api(sim, "POST", "reports", token(sim), report_body(timeBegan=tb))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert isinstance(sim.reports[0]["timeBegan"], int)


def test_413_too_many_indicators(sim, ts):
    ips = [f"10.{i // 250}.{i % 250}.1" for i in range(501)]
    assert count_indicators(" ".join(ips)) == 501
    with pytest.raises(
        requests.HTTPError, match="413 Client Error .*Max indicators extracted per report are 500"
    ):
        ts.submit_report(Report(title="many", body=" ".join(ips), enclave_ids=["enc-a"]))
    resp = ts._client.last_response.json()
    assert resp["error"] == "Payload Too Large" and resp["message"] == TOO_MANY_INDICATORS
    # exactly 500 is fine; repeats of the same indicator count once
    ts.submit_report(Report(title="ok", body=" ".join(ips[:500] * 3), enclave_ids=["enc-a"]))
    assert len(sim.reports) == 1


def test_indicator_counter_kinds():
    text = (
        "http://evil.example.com/a?b=1 evil.example.com 1.2.3.4 1.2.3.4 "
        + "a" * 32
        + " "
        + "b" * 64
        + " service.action os.py 999.1.1.1"
    )
    assert count_indicators(text) == 5


# ---------------------------------------------------------------------------------------------- upsert
def test_upsert_create_then_update(sim, ts):
    r1 = upsert(ts, report_body(ext="gd-1", reportBody="v1"))
    assert r1.status_code == 201 and r1.json()["externalTrackingId"] == "gd-1"
    r2 = upsert(ts, report_body(ext="gd-1", reportBody="v2", title="new title"))
    assert r2.status_code == 200 and r2.json()["id"] == r1.json()["id"]
    assert r2.json()["updated"] > r2.json()["created"]
    [stored] = sim.reports
    assert stored["reportBody"] == "v2" and stored["title"] == "new title"
    r3 = upsert(ts, report_body(ext="gd-1", reportBody="v3"), mode="APPEND")
    assert r3.status_code == 200 and sim.reports[0]["reportBody"] == "v2\nv3"
    # same external id in another enclave is a different report
    assert upsert(ts, report_body(ext="gd-1", enclave="enc-b")).status_code == 201
    assert [sim.count("upsert", s) for s in (200, 201)] == [2, 2]
    assert len(sim.reports_by_external_id()[("enc-a", "gd-1")]) == 1


def test_upsert_validation_and_errors(sim, ts):
    with pytest.raises(requests.HTTPError, match="403"):
        upsert(ts, report_body(enclave="enc-ro"))
    with pytest.raises(requests.HTTPError, match="400"):
        upsert(ts, report_body(ext=None))
    with pytest.raises(requests.HTTPError, match="400"):
        upsert(ts, report_body(), mode="MERGE")
    assert sim.reports == []


def test_upsert_concurrent_is_atomic(sim):
    tok = token(sim)
    barrier = threading.Barrier(16)
    statuses = []

    def worker(i):
        barrier.wait()
        r = api(
            sim,
            "POST",
            "reports/upsert",
            tok,
            report_body(ext="race", reportBody=f"v{i}"),
            idType="external",
            mode="OVERRIDE",
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 15 + [201]
    assert len(sim.reports) == 1


def test_upsert_unsupported_404(sim, ts):
    sim.upsert_supported = False
    with pytest.raises(requests.HTTPError, match="404 Client Error .*No handler found for POST"):
        upsert(ts, report_body())
    body = ts._client.last_response.json()
    assert (
        body["status"] == 404 and body["error"] == "Not Found" and body["path"] == "/api/1.3/reports/upsert"
    )
    assert sim.reports == []


def test_unknown_path_404(sim):
    tok = token(sim)
    r = api(sim, "GET", "no/such/thing", tok)
    assert r.status_code == 404 and r.json()["error"] == "Not Found" and "Trace-Id" in r.headers
    assert requests.get(sim.url + "/nowhere", timeout=5).status_code == 404


# ---------------------------------------------------------------------------------------------- tokens/faults
def test_expired_token_sdk_refreshes_and_retries(sim, ts):
    ts.get_user_enclaves()
    sim.expire_tokens()
    ts.get_user_enclaves()
    assert [(c.kind, c.status) for c in sim.calls] == [
        ("token", 200),
        ("enclaves", 200),
        ("enclaves", 400),
        ("token", 200),
        ("enclaves", 200),
    ]
    assert sim.calls[2].token != sim.calls[4].token
    r = api(sim, "GET", "enclaves", sim.calls[2].token)
    assert r.status_code == 400 and r.json()["error_description"] == "Expired oauth2 access token"


def test_429_storm_raw(sim):
    tok = token(sim)
    sim.storm_429(3, wait_ms=10)
    for _ in range(3):
        r = api(sim, "GET", "enclaves", tok)
        assert r.status_code == 429
        assert r.json() == {
            "message": "Request limit exceeded for the current time period.  "
            "Please wait 10 milliseconds before making more requests.",
            "waitTime": 10,
        }
    assert api(sim, "GET", "enclaves", tok).status_code == 200
    assert sim.count("enclaves", 429) == 3 and {c.fault for c in sim.calls if c.status == 429} == {"injected"}


def test_429_storm_sdk_waits_and_retries(sim, ts):
    ts.get_user_enclaves()
    sim.storm_429(1, wait_ms=10)
    assert len(ts.get_user_enclaves()) == 3
    limited, retried = [c for c in sim.calls if c.kind == "enclaves"][-2:]
    assert (limited.status, retried.status) == (429, 200)
    assert retried.time - limited.time >= 0.9  # the SDK sleeps ceil(ms / 1000) whole seconds
    sim.fail_next(1, 429, wait_ms=120_000)  # > max_wait_time (60 s): SDK gives up
    with pytest.raises(requests.HTTPError, match="429"):
        ts.get_user_enclaves()


def test_fail_next_500_and_kinds(sim, ts):
    ts.get_user_enclaves()
    sim.fail_next(1)
    with pytest.raises(requests.HTTPError, match=r"500 Server Error \(Trace-Id: \w+\)"):
        ts.get_user_enclaves()
    ts.get_user_enclaves()  # only one failure
    sim.fail_next(2, 503, kinds={"submit"})
    ts.get_user_enclaves()  # not a submit: unaffected
    for _ in range(2):
        with pytest.raises(requests.HTTPError, match="503"):
            ts.submit_report(Report(title="t", body="b", enclave_ids=["enc-a"]))
    ts.submit_report(Report(title="t", body="b", enclave_ids=["enc-a"]))
    assert len(sim.reports) == 1
    with pytest.raises(ValueError):
        sim.fail_next(1, kinds={"bogus"})


def test_fail_next_token_endpoint(sim, ts):
    sim.fail_next(1, 502, kinds={"token"})
    with pytest.raises(requests.HTTPError, match="502 Server Error .*unable to get token"):
        ts.get_user_enclaves()
    ts.get_user_enclaves()


def test_drop_next_raises_connection_error(sim, ts):
    ts.get_user_enclaves()
    sim.drop_next(1, kinds={"submit"})
    with pytest.raises(requests.ConnectionError):
        ts.submit_report(Report(title="t", body="b", enclave_ids=["enc-a"]))
    assert sim.reports == []
    assert sim.calls[-1].status == 0 and sim.calls[-1].fault == "drop"
    ts.submit_report(Report(title="t", body="b", enclave_ids=["enc-a"]))
    assert len(sim.reports) == 1


def test_lose_response_next_applies_write(sim, ts):
    ts.get_user_enclaves()
    sim.lose_response_next(1)
    with pytest.raises(requests.ConnectionError):
        ts.submit_report(Report(title="t", body="b", external_id="lost", enclave_ids=["enc-a"]))
    assert len(sim.reports) == 1 and sim.calls[-1].fault == "lost_response"
    # a naive retry creates a duplicate -- exactly what client tests must detect
    ts.submit_report(Report(title="t", body="b", external_id="lost", enclave_ids=["enc-a"]))
    assert len(sim.reports_by_external_id()[("enc-a", "lost")]) == 2
    # with upsert the retry is idempotent
    sim.lose_response_next(1, kinds={"upsert"})
    with pytest.raises(requests.ConnectionError):
        upsert(ts, report_body(ext="u-lost"))
    assert upsert(ts, report_body(ext="u-lost")).status_code == 200


def test_outage_by_calls_and_drop_mode(sim, ts):
    sim.outage(n_calls=2)
    with pytest.raises(requests.HTTPError, match="503 Server Error .*unable to get token"):
        ts.get_user_enclaves()  # token call hit
    with pytest.raises(requests.HTTPError, match="503"):
        ts.get_user_enclaves()
    ts.get_user_enclaves()
    sim.outage(mode="drop")  # until outage(0)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            ts.get_user_enclaves()
    sim.outage(0)
    ts.get_user_enclaves()
    assert sim.count(status=0) == 2 and sim.count(status=503) == 2


def test_outage_by_seconds_with_fake_clock():
    clock = Clock()
    with StationSim(clock=clock) as sim:
        tok = token(sim)
        sim.outage(seconds=5)
        assert api(sim, "GET", "enclaves", tok).status_code == 503
        clock.now += 5
        assert api(sim, "GET", "enclaves", tok).status_code == 200


def test_random_faults_seeded_and_disable(sim):
    def pattern(seed):
        with StationSim(seed=seed) as s:
            tok = token(s)
            s.random_faults(0.5, statuses=(500, 503), drop_share=0.25)
            out = []
            for _ in range(40):
                try:
                    out.append(api(s, "GET", "enclaves", tok).status_code)
                except requests.ConnectionError:
                    out.append(0)
            s.random_faults(0)
            assert api(s, "GET", "enclaves", tok).status_code == 200
            return out

    a, b = pattern(7), pattern(7)
    assert a == b
    assert {0, 200} <= set(a) <= {0, 200, 500, 503} and ({500, 503} & set(a))
    assert a != pattern(8)


def test_quota_sliding_window():
    clock = Clock()
    with StationSim(quota_per_minute=3, window_seconds=60, clock=clock) as sim:
        tok = token(sim)
        for _ in range(3):
            assert api(sim, "GET", "enclaves", tok).status_code == 200
            clock.now += 10  # calls at t=0, 10, 20
        # t=30: window full; oldest call (t=0) leaves at t=60 -> wait 30 s
        r = api(sim, "GET", "enclaves", tok)
        assert r.status_code == 429 and r.json()["waitTime"] == 30000
        assert "Please wait 30000 milliseconds" in r.json()["message"]
        assert sim.calls[-1].fault == "quota"
        clock.now = 1000.0 + 60  # t=0 call has left the window; a 429 did not consume quota
        assert api(sim, "GET", "enclaves", tok).status_code == 200
        r = api(sim, "GET", "enclaves", tok)
        assert r.status_code == 429 and r.json()["waitTime"] == 10000  # t=10 call leaves at t=70
        for _ in range(5):  # token endpoint is exempt
            token(sim)
        clock.now += 60
        (quota,) = api(sim, "GET", "request-quotas", tok).json()
        assert quota["maxRequests"] == 3 and quota["usedRequests"] == 1 and quota["timeWindow"] == 60000
        assert quota["nextResetTime"] - quota["lastResetTime"] == 60000
        sim.quota_per_minute = None  # disable at runtime
        assert all(api(sim, "GET", "enclaves", tok).status_code == 200 for _ in range(5))


def test_latency_knob(sim):
    sim.latency = 0.05
    assert sim.latency == 0.05
    r = requests.post(
        sim.auth_endpoint, auth=("test-key", "test-secret"), data={"grant_type": "client_credentials"}
    )
    assert r.elapsed.total_seconds() >= 0.05
    sim.latency = 0


def test_concurrent_throughput(sim):
    tok = token(sim)
    errors = []

    def worker():
        for _ in range(25):
            r = api(sim, "GET", "enclaves", tok)
            if r.status_code != 200:
                errors.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sim.count("enclaves", 200) == 200


def test_stop_and_restartable_context(sim):
    url = sim.url
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/api/1.3/enclaves", timeout=2)
    sim.stop()  # idempotent


def test_cli_prints_env_and_serves():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sims.station", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("Press Ctrl-C"):
                break
        env_lines = dict(ln.split("=", 1) for ln in lines if ln.startswith("TRUSTAR_"))
        assert env_lines["TRUSTAR_API_KEY"] == "test-key" and env_lines["TRUSTAR_ENCLAVE_IDS"] == "enc-a"
        assert env_lines["TRUSTAR_API_SECRET"] == "test-secret"
        r = requests.post(
            env_lines["TRUSTAR_AUTH_ENDPOINT"],
            auth=("test-key", "test-secret"),
            data={"grant_type": "client_credentials"},
            timeout=5,
        )
        assert r.status_code == 200
        assert env_lines["TRUSTAR_API_ENDPOINT"].endswith("/api/1.3")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
