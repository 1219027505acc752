"""Secrets and files: nothing secret is ever printed or stored, private files are 0600, TLS is always verified.

All through the CLI against the simulators on 127.0.0.1 (the TLS Station is the same
simulator behind a self-signed certificate generated here).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import ssl
import stat
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Cli, Result, write_jsonl
from tests.sims.guardduty import GuardDutyEmulator, make_finding, to_eventbridge
from tests.sims.station import StationSim, _Handler, _Server
from tests.test_fault_storms import records_of

API_KEY = "sec-key-7Qd"
API_SECRET = "Sekr1t+/=&%-v4lue_9Zx"  # characters that change under base64 / URL encoding
AWS_SECRET = "AwsS3cretAccessKeyForTests0123456789abcd"
DEBUG_ENV = {"TRUSTAR_LOGGING_LEVEL": "10", "TRUSTAR_API_KEY": API_KEY, "TRUSTAR_API_SECRET": API_SECRET}


def forbidden(sim) -> list[str]:
    """Every form in which the API secret or an OAuth token could leak."""
    basic = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
    return [API_SECRET, quote(API_SECRET, safe=""), basic, *sim.tokens]


def assert_clean(texts: dict, secrets: list[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}...) leaked into {where}"


def private_files(root: Path) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[str(path)] = path.read_bytes().decode("latin-1")
    return out


@pytest.fixture
def ssim():
    with StationSim(api_key=API_KEY, api_secret=API_SECRET) as station:
        yield station


# --- secrets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["-vv", "send"], ["send", "-vv"]])
def test_secrets_never_leak_at_debug_level_through_a_fault_storm(cli, ssim, tmp_path, flags):
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(i)) for i in range(40)])
    ssim.after(10, "upsert", ssim.expire_tokens)  # tokens expire mid-run: the SDK refreshes them
    ssim.after(20, "upsert", lambda: ssim.fail_next(3, 401, kinds={"upsert"}))
    ssim.storm_429(5, wait_ms=10, kinds={"upsert"})
    ssim.lose_response_next(3, kinds={"upsert"})
    ssim.fail_next(1000, 400, kinds={"quotas"})
    failures = tmp_path / "failures.jsonl"
    result = cli.station(ssim)(*flags, "--json", "--failures", str(failures), "--state",
                               str(tmp_path / "ledger.sqlite3"), str(events), env=DEBUG_ENV)
    assert result.code in (0, 1), result.stderr
    assert "DEBUG urllib3.connectionpool" in result.stderr and "DEBUG trustar" in result.stderr
    assert len(ssim.tokens) > 1, "the run must have refreshed its token"
    assert any(call.status == 400 and call.kind == "upsert" for call in ssim.calls), "an expired token was used"
    assert len(records_of(result.stdout)) == 40
    assert_clean({"stdout": result.stdout, "stderr": result.stderr, **private_files(tmp_path)}, forbidden(ssim))


@pytest.mark.parametrize("debug", [False, True])
def test_a_rejected_secret_is_one_line_exit_2_and_never_echoed(cli, ssim, tmp_path, debug):
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(1))])
    wrong = "Wr0ng+Secret/Value=="
    env = {**DEBUG_ENV, "TRUSTAR_API_SECRET": wrong}
    result = cli.station(ssim)(*(["--debug"] if debug else []), "-vv", "send", str(events), env=env)
    assert result.code in (1, 2) if debug else result.code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("gdtrustar: error:")]
    if not debug:
        assert len(errors) == 1 and "TRUSTAR_API_SECRET" in errors[0]
    basic = base64.b64encode(f"{API_KEY}:{wrong}".encode()).decode()
    assert_clean({"stdout": result.stdout, "stderr": result.stderr}, [wrong, quote(wrong, safe=""), basic,
                                                                      *forbidden(ssim)])
    assert ssim.count("upsert") == 0


def test_backfill_at_debug_level_leaks_neither_station_nor_aws_secrets(cli, ssim, tmp_path):
    with GuardDutyEmulator() as gd:
        detector = gd.add_detector("us-east-1")
        gd.add_findings("us-east-1", detector, [make_finding(i, detector_id=detector) for i in range(12)])
        ssim.after(5, "upsert", ssim.expire_tokens)
        cli.station(ssim).env.update({"AWS_ENDPOINT_URL_GUARDDUTY": gd.url, "AWS_SECRET_ACCESS_KEY": AWS_SECRET})
        result = cli("-vv", "backfill", "--region", "us-east-1", "--json", env=DEBUG_ENV)
    assert result.code == 0, result.stderr
    assert "DEBUG botocore" in result.stderr
    assert {r["action"] for r in records_of(result.stdout)} == {"created"}
    assert_clean({"stdout": result.stdout, "stderr": result.stderr, **private_files(tmp_path)},
                 [*forbidden(ssim), AWS_SECRET])


# --- files -------------------------------------------------------------------------------------------------


def _run_umask0(cli: Cli, *args: str) -> Result:
    """The console script with a permissive umask (0): privacy must not depend on the user's umask."""
    return cli.subprocess(*args, preexec_fn=lambda: os.umask(0))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failures_files_and_ledger_are_private_even_with_umask_0(cli, sim, tmp_path):
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(i)) for i in range(6)])
    (tmp_path / "broken.json").write_text("{")
    cli.station(sim)
    sim.fail_next(10_000, 400, kinds={"upsert"})  # permanent: every finding fails and is listed
    explicit = tmp_path / "out" / "failures.jsonl"
    explicit.parent.mkdir()
    explicit.write_text("old\n")
    os.chmod(explicit, 0o644)  # replacing an existing, readable file must not keep its mode
    state = tmp_path / "st" / "ledger.sqlite3"
    first = _run_umask0(cli, "send", "--failures", str(explicit), "--state", str(state), str(events),
                        str(tmp_path / "broken.json"))
    assert first.code == 1, first.stderr
    assert len(explicit.read_text().splitlines()) == 7 and _mode(explicit) == 0o600
    # the defaults: a timestamped failures file in the working directory, the ledger under XDG_STATE_HOME
    sim.clear_faults()
    sim.fail_next(1, 400, kinds={"upsert"})
    second = _run_umask0(cli, "send", "--concurrency", "1", str(events))
    assert second.code == 1, second.stderr
    defaults = sorted(tmp_path.glob("gdtrustar-failures-*.jsonl"))
    assert len(defaults) == 1 and _mode(defaults[0]) == 0o600
    ledger_dir = tmp_path / "state" / "gdtrustar"
    assert _mode(ledger_dir) == 0o700 and _mode(state.parent) == 0o700
    ledger_files = [*ledger_dir.iterdir(), *state.parent.iterdir()]
    assert any(p.name == "ledger.sqlite3" for p in ledger_files)
    for path in ledger_files:  # the database and its -wal / -shm companions
        assert _mode(path) == 0o600, path
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary failures file is left behind"


# --- TLS ---------------------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (valid name and dates: only trust is missing)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("neither the cryptography package nor openssl is available")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


class TlsStationSim(StationSim):
    """The Station simulator served over HTTPS with the given certificate."""

    def __init__(self, cert: Path, key: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)

    def start(self) -> TlsStationSim:
        server = _Server((self._host, self._port), type("_BoundHandler", (_Handler,), {"sim": self}))
        server.socket = self._context.wrap_socket(server.socket, server_side=True)
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"https://{host}:{port}"
        self.api_endpoint, self.auth_endpoint = self.url + "/api/1.3", self.url + "/oauth/token"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()
        return self


@pytest.fixture
def tls(tmp_path):
    cert, key = self_signed(tmp_path)
    with TlsStationSim(cert, key) as station, StationSim() as plain:
        yield station, plain, cert


# Environment knobs that must not switch verification off.
_NO_BYPASS = {"CURL_CA_BUNDLE": "", "PYTHONHTTPSVERIFY": "0", "TRUSTAR_VERIFY": "false", "GDTRUSTAR_INSECURE": "1",
              "GDTRUSTAR_RETRY_ATTEMPTS": "2"}


@pytest.mark.parametrize("which", ["both", "api-only"])
def test_self_signed_https_station_is_refused_with_one_clear_line(cli, tls, tmp_path, which):
    station, plain, _ = tls
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(i)) for i in range(3)])
    cli.station(station)
    if which == "api-only":  # the token comes from a trusted (plain) endpoint; the API is the self-signed one
        cli.env["TRUSTAR_AUTH_ENDPOINT"] = plain.auth_endpoint
    result = cli("send", "--json", str(events), env=_NO_BYPASS)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdtrustar: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert "SSL" in lines[0] or "certificate" in lines[0].lower(), lines[0]
    assert station.reports == [] and station.calls == [], "no request ever completed over the untrusted channel"
    assert result.stdout == ""


def test_self_signed_https_error_says_certificate_verification_failed(cli, tls, tmp_path):
    station, _, _ = tls
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(1))])
    result = cli.station(station)("send", str(events), env={"GDTRUSTAR_RETRY_ATTEMPTS": "1"})
    assert "certificate" in result.stderr.lower() and "verif" in result.stderr.lower(), result.stderr


def test_the_same_https_station_works_once_its_certificate_is_trusted(cli, tls, tmp_path):
    """Positive control: the TLS simulator is sound, so the refusal above is the certificate check."""
    station, _, cert = tls
    events = write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(i)) for i in range(3)])
    result = cli.station(station)("send", "--json", str(events), env={"REQUESTS_CA_BUNDLE": str(cert)})
    assert result.code == 0, result.stderr
    assert [r["action"] for r in records_of(result.stdout)] == ["created"] * 3
    assert len(station.reports) == 3


def test_there_is_no_flag_to_disable_tls_verification(cli):
    for command in ([], ["send"], ["backfill"], ["deploy-lambda"]):
        result = cli(*command, "--help")
        assert result.code == 0, (command, result.stderr)
        text = result.stdout.lower()
        for word in ("insecure", "no-verify", "verify-ssl", "skip-tls", "--verify"):
            assert word not in text, (command, word)


# --- endpoints: where the credentials go -------------------------------------------------------------------

_NO_INTERNET = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1",
                "GDTRUSTAR_RETRY_ATTEMPTS": "1"}


def _conf(path: Path, sim, role: str = "trustar", **extra: str) -> Path:
    lines = [f"[{role}]", f"auth_endpoint = {sim.auth_endpoint}", f"api_endpoint = {sim.api_endpoint}",
             "user_api_key = planted-key", "user_api_secret = planted-secret", "enclave_ids = enc-a"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_planted_trustar_conf_in_the_working_directory_is_never_read(cli, tmp_path):
    """README's setup: three environment variables, then `gdtrustar send .` in a folder someone else supplied."""
    write_jsonl(tmp_path / "events.jsonl", [to_eventbridge(make_finding(i)) for i in range(2)])
    with StationSim() as planter:
        _conf(tmp_path / "trustar.conf", planter)
        env = {"TRUSTAR_API_KEY": API_KEY, "TRUSTAR_API_SECRET": API_SECRET, "TRUSTAR_ENCLAVE_IDS": "enc-a",
               **_NO_INTERNET}
        result = cli("send", ".", env=env)
        assert planter.calls == [], "the planted file sent the credentials to its own host"
    assert result.code == 1, result.stderr  # the real Station is out of reach here (a dead proxy): issue 8, exit 1
    assert API_SECRET not in result.stderr


def test_a_named_config_file_never_overrides_endpoints_from_the_environment(cli, ssim, tmp_path):
    events = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(make_finding(i)) for i in range(2)])
    with StationSim() as other:
        conf = _conf(tmp_path / "team.conf", other)
        conf.write_text(conf.read_text().replace(f"api_endpoint = {other.api_endpoint}\n", ""))  # auth only
        env = {"TRUSTAR_API_KEY": API_KEY, "TRUSTAR_API_SECRET": API_SECRET, "TRUSTAR_ENCLAVE_IDS": "enc-a",
               "TRUSTAR_API_ENDPOINT": ssim.api_endpoint, "TRUSTAR_PYTHON_CONFIG_PATH": str(conf), **_NO_INTERNET}
        result = cli("send", "--json", str(events), env=env)
        assert other.calls == [], "the config file's auth endpoint received the credentials"
    # the endpoints came from the environment as a set: the token is asked at the default (https) host
    assert result.code == 1 and ssim.count("upsert") == 0, result.stderr  # unreachable at start: exit 1 (issue 8)
    # ... and a config file that names both endpoints works when the environment names none
    env = {"TRUSTAR_PYTHON_CONFIG_PATH": str(_conf(tmp_path / "ok.conf", ssim)), "TRUSTAR_MAX_RATE": "6000"}
    conf_text = (tmp_path / "ok.conf").read_text().replace("planted-key", API_KEY).replace("planted-secret", API_SECRET)
    (tmp_path / "ok.conf").write_text(conf_text)
    ok = cli("send", "--json", str(events), env=env)
    assert ok.code == 0 and [r["action"] for r in records_of(ok.stdout)] == ["created"] * 2, ok.stderr


@pytest.mark.parametrize("where, url", [
    ("TRUSTAR_API_ENDPOINT", "http://station.example.com/api/1.3"),
    ("TRUSTAR_AUTH_ENDPOINT", "http://10.1.2.3/oauth/token"),
    ("TRUSTAR_AUTH_ENDPOINT", "http://127.0.0.1.evil.example/oauth/token"),
    ("TRUSTAR_API_ENDPOINT", "ftp://127.0.0.1/api/1.3"),
    ("--auth-endpoint", "http://localhost.evil.example/oauth/token"),
    ("conf", "http://192.168.0.10/oauth/token"),
])
def test_plain_http_to_anything_but_loopback_is_refused_with_one_line(cli, ssim, tmp_path, where, url):
    events = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(make_finding(1))])
    cli.station(ssim).env.update({"TRUSTAR_API_KEY": API_KEY, "TRUSTAR_API_SECRET": API_SECRET})
    args, env = [], {}
    if where.startswith("--"):
        args = [where, url]
    elif where == "conf":
        for name in ("TRUSTAR_API_ENDPOINT", "TRUSTAR_AUTH_ENDPOINT"):
            del cli.env[name]
        conf = _conf(tmp_path / "t.conf", ssim)
        conf.write_text(conf.read_text().replace(ssim.auth_endpoint, url))
        args = ["--trustar-config", str(conf)]
    else:
        env = {where: url}
    result = cli("send", "--json", *args, str(events), env={**env, **_NO_INTERNET})
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdtrustar: error:") and "https" in lines[0], lines
    assert url in lines[0]
    assert ssim.calls == [] and result.stdout == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.5.6.7"])
def test_plain_http_to_loopback_is_allowed(cli, tmp_path, host):
    events = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(make_finding(1))])
    with StationSim(host="127.0.0.1" if host == "localhost" else host) as station:
        api = station.api_endpoint.replace("127.0.0.1", "localhost") if host == "localhost" else station.api_endpoint
        cli.station(station).env["TRUSTAR_API_ENDPOINT"] = api
        result = cli("send", "--json", str(events))
    assert result.code == 0, result.stderr
    assert [r["action"] for r in records_of(result.stdout)] == ["created"]
