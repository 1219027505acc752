"""Shared fixtures: simulators on 127.0.0.1 and ``cli``, which runs gdtrustar from the source tree.

``cli(...)`` calls ``gdtrustar.cli.main`` in this process with the run's own environment, working
directory and standard streams (the way httpie's tests/utils ``http()`` does): no interpreter start,
and always the code in this tree, never a stale installed copy. ``cli.subprocess(...)`` and
``cli.popen(...)`` run the real console script in a child process instead; they are for the few
tests about the process itself: the console script, signals, end-to-end exit codes, peak memory.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_events"

import gdtrustar  # noqa: E402
from gdtrustar.cli import main  # noqa: E402

assert Path(gdtrustar.__file__).resolve().parent == ROOT / "gdtrustar", (
    f"tests must import gdtrustar from the tree ({ROOT}), not {gdtrustar.__file__}")


def console_script() -> list[str]:
    """The installed ``gdtrustar`` entry point (next to this interpreter first: a venv need not be on PATH)."""
    beside = Path(sys.executable).with_name("gdtrustar")
    found = str(beside) if beside.is_file() else shutil.which("gdtrustar")
    if not found:
        pytest.fail("the gdtrustar console script is not installed (pip install -e '.[test]')")
    return [found]


@dataclass
class Result:
    """What one run produced."""

    code: int
    stdout: str
    stderr: str

    @property
    def records(self) -> list[dict]:
        """The ``--json`` records on stdout."""
        return [json.loads(line) for line in self.stdout.split("\n") if line.strip()]  # not splitlines: U+2028

    def actions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record["action"]] = counts.get(record["action"], 0) + 1
        return counts


def base_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no TruSTAR/AWS settings leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRUSTAR_", "AWS_", "GDTRUSTAR_"))
           and k not in ("API_KEY", "API_SECRET", "USER_API_KEY", "USER_API_SECRET", "ENCLAVE_ID",
                         "API_ENDPOINT", "AUTH_ENDPOINT", "PYTEST_CURRENT_TEST")}
    env.update({
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "GDTRUSTAR_BACKOFF_BASE": "0.01",
        "GDTRUSTAR_BACKOFF_CAP": "0.05",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "COLUMNS": "200",
    })
    return env


def _interpreter_streams() -> dict[str, tuple[str, str]]:
    """(encoding, errors) the interpreter gives a child's piped stdin/stdout/stderr in this locale."""
    probe = "import json, sys; print(json.dumps({n: [s.encoding, s.errors] for n, s in " \
            "(('stdin', sys.stdin), ('stdout', sys.stdout), ('stderr', sys.stderr))}))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL)
    return {name: tuple(value) for name, value in json.loads(proc.stdout).items()}


STREAMS = _interpreter_streams()


def _text(buffer: IO[bytes], name: str) -> io.TextIOWrapper:
    encoding, errors = STREAMS[name]
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors, write_through=True)


@contextmanager
def _process_warnings(stderr: IO[str]) -> Iterator[None]:
    """Warnings as a fresh interpreter shows them: default filters, printed on the run's stderr.

    pytest would otherwise collect them into its summary, and a warning that a user would see on
    stderr could never fail a test. Warnings from threads that were running before the run (the
    simulators, moto) are not the CLI's and keep pytest's handling.
    """
    outside = set(threading.enumerate()) - {threading.current_thread()}
    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")

        def show(message, category, filename, lineno, file=None, line=None):
            if threading.current_thread() in outside:
                return original(message, category, filename, lineno, file, line)
            stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield


def run_main(args: tuple[str, ...], *, env: dict, cwd: Path, input: Optional[bytes] = None,
             timeout: float = 120) -> Result:
    """``gdtrustar *args`` in this process, as the console script would run it, from the tree."""
    out, err = io.BytesIO(), io.BytesIO()
    stdin, stdout, stderr = _text(io.BytesIO(input or b""), "stdin"), _text(out, "stdout"), _text(err, "stderr")
    code = 0
    faulthandler.dump_traceback_later(timeout, file=sys.__stderr__)  # a hung run says where it hangs
    try:
        with _process_warnings(stderr):
            main(list(args), env=env, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd)
    except SystemExit as exc:  # what the interpreter makes of sys.exit(...)
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            stderr.write(f"{exc.code}\n")
            code = 1
    except Exception:  # an uncaught exception: traceback on stderr, exit 1
        traceback.print_exc(file=stderr)
        code = 1
    finally:
        faulthandler.cancel_dump_traceback_later()
    return Result(code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace"))


class Cli:
    """Runs ``gdtrustar`` from the source tree: in-process by default, the console script on request."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = base_env(tmp_path)
        # No test reaches real AWS: a service the test does not point at a simulator (e.g. the
        # CloudFormation look-up of backfill's shared-budget warning) is refused on 127.0.0.1.
        self.env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"

    def station(self, sim, enclaves: str = "enc-a") -> Cli:
        self.env.update({
            "TRUSTAR_API_ENDPOINT": sim.api_endpoint,
            "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint,
            "TRUSTAR_API_KEY": "test-key",
            "TRUSTAR_API_SECRET": "test-secret",
            "TRUSTAR_ENCLAVE_IDS": enclaves,
            "TRUSTAR_MAX_RATE": "600000",  # pacing is tested with a fake clock; here it would only slow tests
        })
        return self

    def __call__(self, *args: str, input: Optional[bytes] = None, env: Optional[dict] = None,
                 timeout: float = 120) -> Result:
        return run_main(args, env={**self.env, **(env or {})}, cwd=self.tmp_path, input=input, timeout=timeout)

    def process_env(self, env: Optional[dict] = None) -> dict[str, str]:
        """The environment for a child process: the tree's gdtrustar first on its path."""
        merged = {**self.env, **(env or {})}
        merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), merged.get("PYTHONPATH")]))
        return merged

    def popen(self, *args: str, env: Optional[dict] = None, cwd: Optional[Path] = None, **kwargs) -> subprocess.Popen:
        """Start the console script (for tests that signal or kill it); ``kwargs`` go to ``Popen``."""
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
        return subprocess.Popen([*console_script(), *args], cwd=cwd or self.tmp_path, env=self.process_env(env),
                                **streams)

    def subprocess(self, *args: str, input: Optional[bytes] = None, env: Optional[dict] = None,
                   cwd: Optional[Path] = None, timeout: float = 120, **kwargs) -> Result:
        """Run the console script in a child process, as a user would; ``kwargs`` go to ``subprocess.run``."""
        proc = subprocess.run([*console_script(), *args], input=input, capture_output=True, cwd=cwd or self.tmp_path,
                              env=self.process_env(env), timeout=timeout, **kwargs)
        return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto in server mode on 127.0.0.1, one per test module (each module's resources stay its own)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sim():
    from tests.sims.station import StationSim

    with StationSim() as station:
        yield station


def write_jsonl(path: Path, docs: list) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Slow tests first: with pytest-xdist (``addopts`` in pyproject.toml) they then overlap the rest of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
