"""Shared fixtures: simulators on 127.0.0.1 and a helper that runs the real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_events"
GDTRUSTAR = shutil.which("gdtrustar") or ""


@dataclass
class Result:
    """What one console-script run produced."""

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
                         "API_ENDPOINT", "AUTH_ENDPOINT")}
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


class Cli:
    """Runs ``gdtrustar`` as a user would: the installed console script, in a subprocess."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = base_env(tmp_path)

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
        command = [GDTRUSTAR] if GDTRUSTAR else [sys.executable, "-m", "gdtrustar"]
        proc = subprocess.run(
            [*command, *args], input=input, capture_output=True, cwd=self.tmp_path,
            env={**self.env, **(env or {})}, timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def sim():
    from tests.sims.station import StationSim

    with StationSim() as station:
        yield station


def write_jsonl(path: Path, docs: list) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path
