"""`gdtrustar send` end to end: the CLI (in-process, from the tree), the real SDK, the Station simulator."""

from __future__ import annotations

import base64
import gzip
import json
import os
import stat

import pytest

from tests.conftest import SAMPLES, write_jsonl
from tests.sims.guardduty import make_finding, to_eventbridge

REPORT_KEYS = {"title", "reportBody", "timeBegan", "externalTrackingId", "externalUrl", "enclaveIds",
               "distributionType"}


def events(n: int, start: int = 0, **kwargs) -> list[dict]:
    return [to_eventbridge(make_finding(i, **kwargs)) for i in range(start, start + n)]


def assert_exactly_once(sim, finding_ids, enclave="enc-a"):
    by_ext = sim.reports_by_external_id()
    for fid in finding_ids:
        ext = base64.b64encode(f"{enclave}|{fid}".encode()).decode()
        assert len(by_ext.get((enclave, ext), [])) == 1, f"{fid} stored {len(by_ext.get((enclave, ext), []))} times"
    assert sum(len(v) for k, v in by_ext.items() if k[0] == enclave) == len(set(finding_ids))


def test_dry_run_on_sample_events_needs_no_credentials(cli):
    result = cli("send", "--dry-run", "--json", str(SAMPLES))
    assert result.code == 0, result.stderr
    records = [r for r in result.records if r["action"] != "skipped"]
    assert len(records) >= 10
    assert {r["action"] for r in records} == {"dry-run"}
    skipped = [r for r in result.records if r["action"] == "skipped"]  # the Malware Protection scan result
    assert [r["origin"].rsplit("/", 1)[-1] for r in skipped] == ["eventbridge-s3-malware-object-scan-result.json"]
    for record in records:
        assert set(record["report"]) == REPORT_KEYS
        assert record["report"]["title"].startswith("[")
    assert "Traceback" not in result.stderr


def test_dry_run_table_without_json(cli):
    result = cli("send", "--dry-run", str(SAMPLES))
    assert result.code == 0
    assert "would be sent" in result.stdout
    assert "dry-run" in result.stderr


def test_missing_credentials_is_exit_2_naming_the_variables(cli, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    result = cli("send", "--enclave-id", "enc-a", str(path))
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TRUSTAR_API_KEY" in lines[0] and "TRUSTAR_API_SECRET" in lines[0]


def test_enclave_without_create_permission_is_exit_2(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    result = cli.station(sim, "enc-a,enc-ro")("send", str(path))
    assert result.code == 2
    assert "enc-ro" in result.stderr
    assert sim.count("upsert") == 0


def test_send_creates_one_report_per_finding_with_one_call_each(cli, sim, tmp_path):
    docs = events(30)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    result = cli.station(sim)("send", "--json", str(path))
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 30}
    ids = [d["detail"]["id"] for d in docs]
    assert_exactly_once(sim, ids)
    assert sim.count("upsert") == 30
    record = result.records[0]
    assert record["external_id"] == base64.b64encode(f"enc-a|{record['finding_id']}".encode()).decode()
    assert record["report_id"]


def test_resend_is_unchanged_with_no_station_write_and_changed_finding_updates(cli, sim, tmp_path):
    docs = events(10)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    cli.station(sim)
    assert cli("send", str(path)).code == 0
    writes = sim.count("upsert")
    again = cli("send", "--json", str(path))
    assert again.code == 0
    assert again.actions() == {"unchanged": 10}
    assert sim.count("upsert") == writes
    docs[3]["detail"]["updatedAt"] = "2030-01-01T00:00:00.000Z"
    docs[3]["detail"]["title"] = "changed title"
    write_jsonl(path, docs)
    third = cli("send", "--json", str(path))
    assert third.actions() == {"unchanged": 9, "updated": 1}
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])
    assert any("changed title" in r["title"] for r in sim.reports)
    forced = cli("send", "--json", "--force", str(path))
    assert forced.actions() == {"updated": 10}


def test_two_enclaves_make_one_report_each(cli, sim, tmp_path):
    docs = events(5)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    result = cli.station(sim, "enc-a,enc-b")("send", "--json", str(path))
    assert result.code == 0
    assert len(result.records) == 10
    ids = [d["detail"]["id"] for d in docs]
    assert_exactly_once(sim, ids, "enc-a")
    assert_exactly_once(sim, ids, "enc-b")


def test_faults_still_deliver_every_finding_exactly_once(cli, sim, tmp_path):
    docs = events(40)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    sim.lose_response_next(5, kinds={"upsert"})
    sim.fail_next(5, 500, kinds={"upsert"})
    sim.drop_next(3, kinds={"upsert"})
    sim.storm_429(4, wait_ms=20, kinds={"upsert"})
    result = cli.station(sim)("send", "--json", str(path))
    assert result.code == 0, result.stderr
    assert result.actions().get("failed", 0) == 0
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])
    assert sim.count(status=429) == 4


def test_token_expiry_mid_run_is_refreshed(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(3))
    cli.station(sim)
    assert cli("send", str(path)).code == 0
    sim.expire_tokens()
    path2 = write_jsonl(tmp_path / "f.jsonl", events(3, start=100))
    result = cli("send", "--json", str(path2))
    assert result.actions() == {"created": 3}


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_outage_mid_run_lists_every_finding_and_replay_delivers(cli, sim, tmp_path, mode):
    fresh = events(15, start=700)
    path = write_jsonl(tmp_path / "f.jsonl", fresh)
    failures = tmp_path / "failures.jsonl"
    # the enclave check (first API call) goes through, then Station is down for every write
    if mode == "error":
        sim.fail_next(10_000, 503, kinds={"upsert"})
    else:
        sim.drop_next(10_000, kinds={"upsert"})
    result = cli.station(sim)("send", "--json", "--failures", str(failures), str(path),
                              env={"GDTRUSTAR_RETRY_ATTEMPTS": "2"})
    assert result.code == 1
    assert result.actions() == {"failed": 15}
    assert len(failures.read_text().splitlines()) == 15
    assert stat.S_IMODE(os.stat(failures).st_mode) == 0o600
    assert "replay with: gdtrustar send" in result.stderr
    sim.clear_faults()
    replay = cli("send", "--json", "--failures", str(failures), str(failures))
    assert replay.code == 0, replay.stderr
    assert replay.actions() == {"created": 15}
    assert failures.read_text() == ""
    assert_exactly_once(sim, [d["detail"]["id"] for d in fresh])


def test_short_outage_within_retry_budget_delivers_everything(cli, sim, tmp_path):
    docs = events(10)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    sim.fail_next(4, 503, kinds={"upsert"})  # fewer than the 6 attempts one finding gets
    result = cli.station(sim)("send", "--json", "--concurrency", "1", str(path))
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 10}
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])


def test_upsert_missing_falls_back_without_duplicates(cli, sim, tmp_path):
    sim.upsert_supported = False
    docs = events(8)
    path = write_jsonl(tmp_path / "e.jsonl", docs)
    sim.lose_response_next(2, kinds={"submit"})
    result = cli.station(sim)("send", "--json", "--concurrency", "2", str(path))
    assert result.code == 0, result.stderr
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])
    docs[0]["detail"]["updatedAt"] = "2031-01-01T00:00:00.000Z"
    write_jsonl(path, docs)
    again = cli("send", "--json", str(path))
    assert again.actions() == {"unchanged": 7, "updated": 1}
    assert_exactly_once(sim, [d["detail"]["id"] for d in docs])


def test_bad_inputs_one_line_each_and_the_rest_delivered(cli, sim, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", events(2))
    (tmp_path / "broken.json").write_text('{"detail-type": "GuardDuty Finding", ')
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "binary.json").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "trunc.json.gz").write_bytes(gzip.compress(json.dumps(events(1, start=50)).encode())[:-20])
    wrong = {"version": "0", "id": "x", "detail-type": "EC2 Instance State-change Notification",
             "source": "aws.ec2", "detail": {"state": "running"}}
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    lines = write_jsonl(tmp_path / "mixed.jsonl", events(1, start=60))
    with open(lines, "a") as fh:
        fh.write("{not json}\n")
    result = cli.station(sim)("send", "--json", str(tmp_path))
    assert result.code == 1
    assert "Traceback" not in result.stderr
    problem_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("gdtrustar: invalid")]
    for name in ("broken.json", "empty.json", "binary.json", "trunc.json.gz", "wrong.json", "mixed.jsonl:2"):
        assert sum(name in ln for ln in problem_lines) == 1, (name, problem_lines)
    assert result.actions()["created"] == 3
    assert good.exists()


def test_stdin_and_samples_excluded(cli, sim, tmp_path):
    docs = events(3) + events(2, start=10, sample=True)
    data = "".join(json.dumps(d) + "\n" for d in docs).encode()
    result = cli.station(sim)("send", "--json", "--exclude-samples", "-", input=data)
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 3, "skipped": 2}


@pytest.mark.parametrize("flag_position", ["before", "after"])
def test_secrets_never_in_output_at_debug_verbosity(cli, sim, tmp_path, flag_position):
    path = write_jsonl(tmp_path / "e.jsonl", events(3))
    args = ["-vv", "send", "--json", str(path)] if flag_position == "before" else ["send", "-vv", "--json", str(path)]
    sim.expire_tokens()
    result = cli.station(sim)(*args, env={"TRUSTAR_LOGGING_LEVEL": "10"})
    assert result.code == 0, result.stderr
    assert "DEBUG" in result.stderr
    everything = result.stdout + result.stderr
    assert "test-secret" not in everything
    for token in sim.tokens:
        assert token not in everything
    json_lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(json_lines) == 3


def test_ledger_is_private(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    state = tmp_path / "ledger.sqlite3"
    assert cli.station(sim)("send", "--state", str(state), str(path)).code == 0
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600


def test_legacy_environment_names(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(2))
    env = {"API_ENDPOINT": sim.api_endpoint, "AUTH_ENDPOINT": sim.auth_endpoint, "USER_API_KEY": "test-key",
           "API_SECRET": "test-secret", "ENCLAVE_ID": "enc-b", "TRUSTAR_MAX_RATE": "60000"}
    result = cli("send", "--json", str(path), env=env)
    assert result.code == 0, result.stderr
    assert {r["enclave_id"] for r in result.records} == {"enc-b"}


def test_flag_beats_environment_and_trustar_conf_is_read(cli, sim, tmp_path):
    conf = tmp_path / "trustar.conf"
    conf.write_text(f"[gd]\nauth_endpoint = {sim.auth_endpoint}\napi_endpoint = {sim.api_endpoint}\n"
                    "user_api_key = test-key\nuser_api_secret = test-secret\nenclave_ids = enc-b\n")
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    result = cli("send", "--json", "--trustar-config", str(conf), "--trustar-role", "gd",
                 "--enclave-id", "enc-a", str(path), env={"TRUSTAR_ENCLAVE_IDS": "enc-b"})
    assert result.code == 0, result.stderr
    assert [r["enclave_id"] for r in result.records] == ["enc-a"]


def test_fallback_path_handles_external_ids_with_url_special_characters(cli, sim, tmp_path):
    sim.upsert_supported = False
    finding = make_finding(1)
    finding["id"] = "id~~0?>"  # base64("enc-a|id~~0?>") holds "+" and "/"
    assert "/" in base64.b64encode(f"enc-a|{finding['id']}".encode()).decode()
    path = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(finding)])
    cli.station(sim)
    assert cli("send", "--json", str(path)).actions() == {"created": 1}
    finding["updatedAt"] = "2031-01-01T00:00:00.000Z"
    write_jsonl(path, [to_eventbridge(finding)])
    assert cli("send", "--json", str(path)).actions() == {"updated": 1}
    assert_exactly_once(sim, [finding["id"]])
    assert sim.count("put", 200) == 1


def test_spent_quota_fails_fast_into_the_failures_file(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    sim.storm_429(1, wait_ms=4 * 3600 * 1000, kinds={"upsert"})  # "come back in four hours"
    failures = tmp_path / "failures.jsonl"
    result = cli.station(sim)("send", "--json", "--failures", str(failures), str(path))
    assert result.code == 1
    assert result.records[0]["action"] == "failed" and "429" in result.records[0]["error"]
    assert len(failures.read_text().splitlines()) == 1
