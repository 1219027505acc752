"""Hostile input through the console script (issue 11, items 3, 4, 10, 12): one bad part is one invalid record.

Bad bytes, lone surrogates, gzip bombs and terminal escape sequences each cost exactly the finding (or line)
that carries them: it is listed with a clear reason naming file and line, every other finding is delivered,
and nothing reaches the terminal, the ledger or Station that could break them.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.sims.guardduty import make_finding, to_eventbridge
from tests.test_readers_fuzz import run_measured


def events(n: int, start: int = 0) -> list[dict]:
    return [to_eventbridge(make_finding(i)) for i in range(start, start + n)]


def problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("gdtrustar: invalid:")]


def failures_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


# --- 3. one bad byte costs one line ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_one_bad_byte_in_line_500_costs_that_line_only(cli, tmp_path, gz):
    docs = events(1000)
    lines = [json.dumps(d).encode() for d in docs]
    lines[499] = lines[499].replace(b'"title": "', b'"title": "caf\xe9 \xff ', 1)  # latin-1 and a stray byte
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / ("big.jsonl.gz" if gz else "big.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    failures = tmp_path / "failures.jsonl"
    result = cli("send", "--dry-run", "--json", "--failures", str(failures), str(path))
    assert result.code == 1, result.stderr
    assert "unexpected" not in result.stderr
    records = result.records
    assert len(records) == 1000
    assert [r["origin"] for r in records if r["action"] == "invalid"] == [f"{path}:500"]
    delivered = [r["finding_id"] for r in records if r["action"] == "dry-run"]
    assert delivered == [d["detail"]["id"] for i, d in enumerate(docs) if i != 499]
    (line,) = problems(result.stderr)
    assert f"{path}:500" in line and "UTF-8" in line and "0xe9" in line
    # the failures record shows what was there (bad bytes escaped) ...
    (record,) = failures_of(failures)
    assert record["failure"]["origin"] == f"{path}:500"
    assert "caf\\xe9 \\xff" in record["raw"] and docs[499]["detail"]["id"] in record["raw"]
    # ... and stays invalid on replay, with its original reason and its raw text
    again = tmp_path / "again.jsonl"
    replay = cli("send", "--dry-run", "--json", "--failures", str(again), str(failures))
    assert replay.code == 1, replay.stderr
    assert [(r["action"], r["error"]) for r in replay.records] == [("invalid", record["failure"]["error"])]
    assert failures_of(again)[0]["raw"] == record["raw"]


def test_bad_byte_in_a_whole_document_names_the_file_and_its_line(cli, tmp_path):
    good = tmp_path / "a-good.json"
    good.write_text(json.dumps(events(2), indent=2))
    bad = tmp_path / "b-bad.json"
    text = json.dumps(events(2, 10), indent=2).encode()
    bad.write_bytes(text.replace(b'"title": "', b'"title": "\xc3\x28', 1))  # an invalid 2-byte sequence
    line_of_byte = text[:text.index(b'"title": "')].count(b"\n") + 1
    result = cli("send", "--dry-run", "--json", str(tmp_path))
    assert result.code == 1, result.stderr
    assert result.actions() == {"dry-run": 2, "invalid": 1}
    (line,) = problems(result.stderr)
    assert line.startswith(f"gdtrustar: invalid: {bad}:{line_of_byte}: ") and "UTF-8" in line


def test_valid_multibyte_text_and_crlf_lines_still_read(cli, tmp_path):
    docs = events(3)
    docs[1]["detail"]["title"] = "Zugriff über café ☕ 🚀"
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(json.dumps(d, ensure_ascii=False).encode() + b"\r\n" for d in docs))
    result = cli("send", "--dry-run", "--json", str(path))
    assert result.code == 0, result.stderr
    assert result.actions() == {"dry-run": 3}
    assert "café ☕ 🚀" in result.records[1]["report"]["title"]


# --- 10. gzip bomb: one line or document is capped ---------------------------------------------------------


def _gzip_bomb(path: Path, before: bytes, size: int, after: bytes) -> None:
    """A .gz whose middle line is ``size`` bytes of "A", written as repeated gzip members (1 MiB each)."""
    member = gzip.compress(b"A" * (1 << 20), compresslevel=9)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(before))
        for _ in range(size >> 20):
            fh.write(member)
        fh.write(gzip.compress(after))


def test_gzip_bomb_one_gib_line_is_one_invalid_record_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    first, last = (json.dumps(e).encode() for e in events(2))
    _gzip_bomb(path, first + b"\n", 1 << 30, b"\n" + last + b"\n")
    assert path.stat().st_size < 2_000_000
    failures = tmp_path / "failures.jsonl"
    code, out, err, peak_mb = run_measured(tmp_path, "send", "--dry-run", "--json", "--failures", str(failures),
                                           str(path))
    assert code == 1, err
    assert "unexpected" not in err and "Traceback" not in err
    assert [json.loads(line)["action"] for line in out.split("\n") if line] == ["dry-run", "invalid", "dry-run"]
    (line,) = problems(err)
    assert line.startswith(f"gdtrustar: invalid: {path}:2: ") and "16 MiB" in line
    assert "GDTRUSTAR_MAX_DOCUMENT_BYTES" in line
    assert failures.stat().st_size < 4096, "the oversized content is not copied into the failures file"
    # An idle run is ~60 MB; reading the line whole costs 1-4 GB. A safety bound, not a speed goal.
    assert peak_mb < 200, f"peak RSS {peak_mb} MB"


def test_the_document_cap_is_configurable_and_applies_to_whole_documents(cli, tmp_path):
    small = json.dumps(events(1)[0])
    long = events(1, 20)[0]
    long["detail"]["description"] = "B" * 5000
    path = tmp_path / "mixed.jsonl"
    path.write_text(small + "\n" + json.dumps(long) + "\n" + small + "\n")
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps(events(3, 5), indent=2))
    env = {"GDTRUSTAR_MAX_DOCUMENT_BYTES": str(len(small) + 10)}
    result = cli("send", "--dry-run", "--json", str(path), str(whole), env=env)
    assert result.code == 1, result.stderr
    assert [r["action"] for r in result.records] == ["dry-run", "invalid", "dry-run", "invalid"]
    origins = [re.match(r"gdtrustar: invalid: (.*?): ", line).group(1) for line in problems(result.stderr)]
    assert origins == [f"{path}:2", f"{whole}:1"]
    assert cli("send", "--dry-run", "--json", str(path), str(whole)).actions() == {"dry-run": 6}


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_a_bad_document_cap_is_one_line_exit_2(cli, tmp_path, value):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    result = cli("send", "--dry-run", "--json", str(path), env={"GDTRUSTAR_MAX_DOCUMENT_BYTES": value})
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "GDTRUSTAR_MAX_DOCUMENT_BYTES" in lines[0], result.stderr
    assert result.stdout == ""


# --- 4. lone surrogates and non-UTF-8 file names -----------------------------------------------------------


def _with_surrogate(event: dict, where: str) -> str:
    """The event as a JSON line whose ``where`` (id, title, a key) holds the lone surrogate \\ud800."""
    if where == "id":
        event["detail"]["id"] = "PLACEHOLDER"
    elif where == "title":
        event["detail"]["title"] = "PLACEHOLDER"
    else:
        event["detail"]["service"]["additionalInfo"]["PLACEHOLDER"] = 1
    return json.dumps(event).replace("PLACEHOLDER", "bad\\ud800")


@pytest.mark.parametrize("where", ["id", "title", "key"])
def test_a_lone_surrogate_makes_that_finding_invalid_and_the_rest_go_on(cli, sim, tmp_path, where):
    docs = events(5)
    lines = [json.dumps(d) for d in docs]
    lines[2] = _with_surrogate(docs[2], where)
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    failures = tmp_path / "failures.jsonl"
    result = cli.station(sim)("send", "--json", "--failures", str(failures), str(path))
    assert result.code == 1, result.stderr
    assert "unexpected" not in result.stderr
    assert result.actions() == {"created": 4, "invalid": 1}
    assert [r["origin"] for r in result.records if r["action"] == "invalid"] == [f"{path}:3"]
    (line,) = problems(result.stderr)
    assert f"{path}:3" in line and "not valid Unicode" in line and "\\ud800" in line
    assert len(sim.reports) == 4
    # listed, exactly as it was (JSON escapes), and invalid again on replay for the same reason
    (record,) = failures_of(failures)
    assert "\\ud800" in failures.read_text(encoding="utf-8")
    replay = cli("send", "--json", str(failures))
    assert [(r["action"], r["error"]) for r in replay.records] == [("invalid", record["failure"]["error"])]


def test_surrogates_in_a_non_finding_reach_every_output_safely(cli, tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_text('{"k\\udc80ey": "v\\ud800"}\n' + json.dumps(events(1)[0]) + "\n")
    failures = tmp_path / "failures.jsonl"
    for json_flag in (["--json"], []):
        result = cli("send", "--dry-run", *json_flag, "--failures", str(failures), str(path))
        assert result.code == 1, result.stderr
        assert "unexpected" not in result.stderr
        (line,) = problems(result.stderr)
        assert "k\\udc80ey" in line
    assert failures_of(failures)[0]["document"] == {"k\udc80ey": "v\ud800"}


def test_file_names_that_are_not_utf8_are_shown_escaped(cli, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raw_dir = bytes(folder)
    with open(raw_dir + b"/caf\xe9.jsonl", "wb") as fh:
        fh.write(b"not json\n" + json.dumps(events(1)[0]).encode() + b"\n")
    with open(raw_dir + b"/good.json", "wb") as fh:
        fh.write(json.dumps(events(1, 1)[0]).encode())
    failures = tmp_path / "failures.jsonl"
    for source in (str(folder), os.fsdecode(raw_dir + b"/caf\xe9.jsonl"), os.fsdecode(raw_dir + b"/gone\xff.json")):
        result = cli("send", "--dry-run", "--json", "--failures", str(failures), source)
        assert result.code == 1, result.stderr
        assert "unexpected" not in result.stderr
        (line,) = problems(result.stderr)
        assert "caf\\xe9.jsonl:1: invalid JSON" in line or "gone\\xff.json: no such file" in line, line
        origins = [r["origin"] for r in result.records if r["action"] == "invalid"]
        assert origins and all("\\x" in origin for origin in origins)
    assert len(failures_of(failures)) == 1


# --- 12. terminal escape injection -------------------------------------------------------------------------

ESCAPES = ["\x1b[2K\x1b[1A", "\r", "\x1b]52;c;ZXZpbA==\x07", "\x9b31m", "\u202egnp.exe", "\x7f"]
RAW_BYTES = [b"\x1b", b"\x07", b"\xc2\x9b", "\u202e".encode(), b"\x7f", b"\r"]


def _hostile_event(i: int) -> dict:
    event = events(1, i)[0]
    event["detail"]["title"] = "title " + "".join(ESCAPES)
    event["detail"]["type"] = "Recon:EC2/[link=https://evil.example]x[/link]\x1b[8m"
    event["detail"]["accountId"] = "1234\x1b[1A"
    event["detail"]["region"] = "us-east-1\x9b2J"
    return event


def _assert_no_raw_controls(data: bytes, where: str) -> None:
    for raw in RAW_BYTES:
        assert raw not in data.replace(b"\r\n", b"\n"), f"{raw!r} reached {where}"


def _cells(table: str) -> list[str]:
    """The cells of the dry-run table's one row, each joined from the lines it was folded over."""
    rows = [line.split("│")[1:-1] for line in table.split("By severity")[0].splitlines() if line.startswith("│")]
    return ["".join(piece.strip() for piece in column) for column in zip(*rows)]


def test_escape_sequences_from_input_never_reach_the_terminal(cli, tmp_path):
    path = tmp_path / "hostile.jsonl"
    hostile = {"\x1b[2K\x1b[1Aok": 1, "\x1b]52;c;ZXZpbA==\x07": 2, "\u202e\x9b": 3}
    path.write_text("\n".join([json.dumps(hostile), json.dumps(_hostile_event(1))]) + "\n")
    failures = f"fail\x1b[2J{chr(0x9b)}.jsonl"
    result = cli("send", "--dry-run", "--failures", failures, str(path))
    assert result.code == 1, result.stderr
    out, err = result.stdout.encode(), result.stderr.encode()
    _assert_no_raw_controls(out, "stdout (dry-run table)")
    _assert_no_raw_controls(err, "stderr (problem and summary lines)")
    (line,) = problems(result.stderr)
    assert "\\x1b[2K\\x1b[1Aok" in line and "\\x1b]52;c;ZXZpbA==\\x07" in line and "\\u202e\\x9b" in line
    severity, title, kind, account, region = _cells(result.stdout)
    assert title.replace(" ", "") == "[Medium]title\\x1b[2K\\x1b[1A\\x1b]52;c;ZXZpbA==\\x07\\x9b31m\\u202egnp.exe\\x7f"
    assert kind == "Recon:EC2/[link=https://evil.example]x[/link]\\x1b[8m", "table cells are text, not rich markup"
    assert (account, region) == ("1234\\x1b[1A", "us-east-1\\x9b2J")
    assert "fail\\x1b[2J\\x9b.jsonl" in result.stderr


def test_json_output_stays_exact_and_carries_no_raw_controls(cli, tmp_path):
    path = tmp_path / "hostile.jsonl"
    event = _hostile_event(2)
    path.write_text(json.dumps({"\x1b]52;c;ZXZpbA==\x07\u2028": 1}) + "\n" + json.dumps(event) + "\n")
    result = cli("send", "--dry-run", "--json", str(path))
    assert result.code == 1, result.stderr
    _assert_no_raw_controls(result.stdout.encode(), "--json stdout")
    assert "\u2028" not in result.stdout
    invalid, dry = result.records
    assert "\x1b]52;c;ZXZpbA==\x07\u2028" in invalid["error"], "the exact text, as JSON escapes"
    assert dry["report"]["title"].endswith("".join(ESCAPES[2:]))  # the mapper turns "\r" into a space


def test_error_lines_are_escaped_too(cli, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    result = cli("send", "--json", str(path), env={"TRUSTAR_PYTHON_CONFIG_PATH": "/nope/\x1b]52;c;ZXZpbA==\x07.conf"})
    assert result.code == 2, result.stderr
    _assert_no_raw_controls(result.stderr.encode(), "the error line")
    assert "\\x1b]52;c;ZXZpbA==\\x07.conf" in result.stderr


def test_a_setting_that_is_not_utf8_is_one_config_error(cli, sim, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", events(1))
    cli.station(sim)
    # a child process: the environment reaches it as bytes (subprocess encodes "\udcff" as the byte 0xff)
    result = cli.subprocess("send", "--json", str(path), env={"TRUSTAR_ENCLAVE_IDS": "enc-a,enc-\udcff"})
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "enclave ids" in lines[0] and "UTF-8" in lines[0], lines
    assert sim.count("upsert") == 0
