"""The thin door: entry points, usage errors and exit codes (in-process, and through the console script)."""

from __future__ import annotations

import subprocess
import sys

from gdtrustar import __version__
from tests.conftest import SAMPLES


def test_version_console_script_and_python_dash_m(cli, tmp_path):
    assert __version__ in cli("--version").stdout
    result = cli.subprocess("--version")  # the installed entry point exists and runs
    assert result.code == 0 and __version__ in result.stdout
    proc = subprocess.run([sys.executable, "-m", "gdtrustar", "--help"], capture_output=True, text=True,
                          env=cli.process_env(), cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("send", "backfill", "deploy-lambda"):
        assert command in proc.stdout


def test_usage_errors_exit_2_with_one_message(cli):
    assert cli("send").code == 2  # SOURCE is required
    bad = cli("send", "--concurrency", "0", "x.json")
    assert bad.code == 2 and "concurrency" in bad.stderr
    sev = cli("backfill", "--min-severity", "urgent", "--region", "us-east-1")
    assert sev.code == 2 and "urgent" in sev.stderr
    when = cli("backfill", "--since", "yesterday-ish", "--region", "us-east-1")
    assert when.code == 2 and "relative time" in when.stderr
    assert "Traceback" not in bad.stderr + sev.stderr + when.stderr


def test_missing_source_is_invalid_not_a_crash(cli):
    result = cli("send", "--dry-run", "--json", "does-not-exist.json")
    assert result.code == 1
    assert result.records[0]["action"] == "invalid"
    assert "does-not-exist.json: no such file" in result.stderr


def test_no_enclave_outside_dry_run_is_exit_2(cli, sim, tmp_path):
    (tmp_path / "e.json").write_text("{}")
    cli.station(sim)
    result = cli("send", "e.json", env={"TRUSTAR_ENCLAVE_IDS": ""})
    assert result.code == 2 and "TRUSTAR_ENCLAVE_IDS" in result.stderr


def test_bad_max_rate_environment_is_exit_2(cli, sim, tmp_path):
    (tmp_path / "e.json").write_text("{}")
    result = cli.station(sim)("send", "e.json", env={"TRUSTAR_MAX_RATE": "fast"})
    assert result.code == 2 and "TRUSTAR_MAX_RATE" in result.stderr


def test_named_sdk_log_level_does_not_crash_the_import(cli):
    # the trustar SDK int()-parses TRUSTAR_LOGGING_LEVEL at import; a name like WARNING must still work.
    # A fresh process: in this one the SDK is imported already.
    result = cli.subprocess("send", "--dry-run", "--json", str(SAMPLES), env={"TRUSTAR_LOGGING_LEVEL": "WARNING"})
    assert result.code == 0, result.stderr
    assert result.records and {r["action"] for r in result.records} == {"dry-run", "skipped"}  # a scan result


def test_exit_codes_end_to_end_through_the_console_script(cli, tmp_path):
    """1 and 2 as the shell sees them (0: the tests above, 130: test_backfill's Ctrl-C test)."""
    (tmp_path / "broken.json").write_text("{")
    assert cli.subprocess("send", "--dry-run", "broken.json").code == 1
    usage = cli.subprocess("send", "--concurrency", "0", "x.json")
    assert usage.code == 2 and "concurrency" in usage.stderr and "Traceback" not in usage.stderr


def test_an_in_process_run_leaves_the_process_as_it_found_it(cli, sim, tmp_path):
    """main()'s injected environment, directory, streams, logging and secrets last only as long as the run."""
    import logging
    import os

    from gdtrustar.logs import redact

    (tmp_path / "e.json").write_text((SAMPLES / "eventbridge-seed-integration-guide.json").read_text())
    before = (dict(os.environ), os.getcwd(), sys.stdin, sys.stdout, sys.stderr, list(logging.root.handlers),
              logging.root.level, logging.getLogger("trustar").level, logging.getLogger("botocore").level)
    result = cli.station(sim)("-vv", "send", "--json", "e.json", env={"GDTRUSTAR_ONLY_IN_THE_RUN": "1"})
    assert result.code == 0, result.stderr
    assert "DEBUG" in result.stderr and result.records  # the run's logging and output went to its streams
    after = (dict(os.environ), os.getcwd(), sys.stdin, sys.stdout, sys.stderr, list(logging.root.handlers),
             logging.root.level, logging.getLogger("trustar").level, logging.getLogger("botocore").level)
    assert after == before
    assert redact("test-secret") == "test-secret"  # the run's secrets are forgotten with it
