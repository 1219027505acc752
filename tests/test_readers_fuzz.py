"""Any input, clear outcome: fuzzing the readers (sources.iter_documents + items.items_from) and the CLI.

Every document must end as a finding or as an ``invalid`` item with a reason and an origin naming the
file (and line, for JSON Lines); no exception may escape, the CLI must print one line per
bad document and no traceback, and memory must stay bounded for a 50 MB line.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import astuple
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdtrustar.findings import normalize
from gdtrustar.items import items_from
from gdtrustar.mapper import build_report
from gdtrustar.sources import iter_documents
from tests.conftest import Cli, console_script
from tests.sims.guardduty import make_finding, to_eventbridge
from tests.strategies import eventbridge

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
REQUIRED = ("id", "type", "severity", "accountId", "region")

# Any JSON value, including the hostile ones (400-digit integers, NaN and infinity, which json accepts);
# deep nesting and 4300+-digit numbers have their own tests below.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.integers(10**300, 10**400),
                     st.text(max_size=10), st.floats(),
                     st.sampled_from(["", "0", "5", "2024-01-01T00:00:00Z", "1700000000000", "true", "\u2028", "\x00"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=12)
# Finding-shaped objects whose fields hold values of any (and the wrong) type.
_finding_like = st.fixed_dictionaries(
    {key: _json for key in REQUIRED},
    optional={"createdAt": _json, "updatedAt": _json, "title": _json,
              "service": st.fixed_dictionaries({}, optional={"additionalInfo": _json, "action": _json,
                                                             "eventFirstSeen": _json, "count": _json}),
              "resource": st.fixed_dictionaries({}, optional={"instanceDetails": _json, "accessKeyDetails": _json})},
)
_pascal_like = _finding_like.map(lambda d: {k[:1].upper() + k[1:]: v for k, v in d.items()})
_event_like = _finding_like.map(eventbridge)
_documents = st.one_of(_json, _finding_like, _pascal_like, _event_like, st.lists(_event_like, max_size=3),
                       st.fixed_dictionaries({"Findings": st.lists(_pascal_like | _json, max_size=3)}),
                       st.fixed_dictionaries({"failure": _json, "finding": _finding_like}))


def fresh(tmp_path: Path) -> Path:
    """A new directory per hypothesis example (``tmp_path`` is shared by all examples of a test)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def _valid_event(i: int) -> dict:
    return to_eventbridge(make_finding(i))


def drive(paths: list[str], stdin: bytes | None = None) -> list:
    """All items of the sources, checking the invariants every item must hold."""
    items = list(items_from(iter_documents(paths, stdin=io.BytesIO(stdin) if stdin is not None else None)))
    names = ["<stdin>" if p == "-" else p for p in paths]
    for item in items:
        assert any(item.origin.startswith(name) for name in names), item.origin
        assert (item.finding is None) != (item.error is None), item
        if item.error is not None:
            assert isinstance(item.error, str) and item.error.strip()
            assert "Traceback" not in item.error
        else:
            assert isinstance(item.finding["id"], str) and item.finding["id"]
            assert isinstance(item.finding["severity"], float)
            build_report(item.finding, "enc-fuzz")  # the mapper takes whatever the normaliser accepts
    return items


def _expected_lines(lines: list[str]) -> dict[int, object]:
    return {n: json.loads(line) for n, line in enumerate(lines, 1) if line.strip()}


def _is_container(value: object) -> bool:
    """Lists and GetFindings responses explode into their elements (possibly none)."""
    return isinstance(value, list) or (isinstance(value, dict) and any(
        isinstance(value.get(k), list) for k in ("Findings", "findings")))


def _outcomes(value: object) -> int:
    """How many items one document must give, by the reader's contract (findings.explode's docstring).

    Lists give one per element (recursively), GetFindings output one per element of ``Findings`` /
    ``findings``, anything else exactly one: a finding or an invalid item. Counting them is what
    catches an element dropped without a word.
    """
    if isinstance(value, list):
        return sum(_outcomes(element) for element in value)
    if isinstance(value, dict):
        for key in ("Findings", "findings"):
            if isinstance(value.get(key), list):
                return len(value[key])
    return 1


@FUZZ
@given(docs=st.lists(_documents, min_size=1, max_size=6), layout=st.sampled_from(["jsonl", "jsonl.gz", "stdin"]),
       blank=st.booleans())
def test_json_lines_every_line_is_a_finding_or_an_invalid_item_naming_its_line(tmp_path, docs, layout, blank):
    lines = [json.dumps(doc) for doc in docs]
    if blank:
        lines.insert(1, "   ")
    data = ("\n".join(lines) + "\n").encode()
    if layout == "stdin":
        source, name = "-", "<stdin>"
    else:
        path = fresh(tmp_path) / f"fuzz.{layout}"
        path.write_bytes(gzip.compress(data) if layout.endswith(".gz") else data)
        source = name = str(path)
    items = drive([source], stdin=data if layout == "stdin" else None)
    for lineno, value in _expected_lines(lines).items():
        mine = [item for item in items if item.origin == f"{name}:{lineno}" or item.origin.startswith(
            f"{name}:{lineno} ")]
        assert len(mine) == _outcomes(value), (lineno, value, [i.origin for i in items])
        if not _is_container(value):
            assert (mine[0].finding is not None) == _normalises(value)
    assert len(items) == sum(map(_outcomes, _expected_lines(lines).values()))


def _normalises(value: object) -> bool:
    try:
        normalize(value)
    except Exception:
        return False
    return True


@FUZZ
@given(doc=_documents, pretty=st.booleans(), gz=st.booleans())
def test_one_json_document_file(tmp_path, doc, pretty, gz):
    text = json.dumps(doc, indent=2 if pretty else None)
    path = fresh(tmp_path) / ("doc.json.gz" if gz else "doc.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    items = drive([str(path)])
    assert len(items) == _outcomes(doc), [item.origin for item in items]
    if not _is_container(doc):
        # a one-line file is read as JSON Lines, so its origin may carry ":1"
        assert items[0].origin in (str(path), f"{path}:1")


@FUZZ
@given(data=st.binary(max_size=3000), prefix=st.sampled_from([b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"\xef\xbb\xbf",
                                                               b"{", b"[", b"\xff\xfe", b'{"id": "']),
       suffix=st.sampled_from([".json", ".jsonl", ".json.gz", ".bin"]))
def test_random_bytes_are_invalid_documents_not_exceptions(tmp_path, data, prefix, suffix):
    directory = fresh(tmp_path)
    path = directory / f"random{suffix}"
    path.write_bytes(prefix + data)
    items = drive([str(path)])
    if not (suffix == ".jsonl" and not (prefix + data).strip()):  # zero JSON Lines records is valid
        assert items, "every file yields at least one item (an error if nothing else)"
    # a directory walk picks up only the known suffixes, with the same outcome per file
    walked = drive([str(directory)])
    assert len(walked) == (len(items) if suffix != ".bin" else 0)


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), count=st.integers(1, 6), jsonl=st.booleans())
def test_truncated_gzip_delivers_the_intact_prefix_and_names_the_damage(tmp_path, cut, count, jsonl):
    events = [_valid_event(i) for i in range(count)]
    raw = "".join(json.dumps(e) + "\n" for e in events) if jsonl else json.dumps(events)
    compressed = gzip.compress(raw.encode())
    path = fresh(tmp_path) / ("t.jsonl.gz" if jsonl else "t.json.gz")
    path.write_bytes(compressed[:int(len(compressed) * cut)])
    items = drive([str(path)])
    findings = [item.finding["id"] for item in items if item.finding]
    assert findings == [e["detail"]["id"] for e in events][:len(findings)], "only an intact prefix, in order"
    assert items[-1].error is not None
    assert any(word in items[-1].error for word in ("gzip", "empty file")), items[-1].error


@pytest.mark.parametrize("depth", [9, 100, 999, 5_000, 200_000])
@pytest.mark.parametrize("as_line", [False, True])
def test_deeply_nested_arrays_are_one_clear_outcome(tmp_path, depth, as_line):
    path = tmp_path / ("deep.jsonl" if as_line else "deep.json")
    good = json.dumps(_valid_event(1))
    path.write_text(("[" * depth + "]" * depth) + ("\n" + good + "\n" if as_line else ""))
    items = drive([str(path)])
    errors = [item for item in items if item.error]
    assert len(items) == 1 + as_line, [item.origin for item in items]  # the nested document is not dropped
    assert len(errors) == 1 and all("nested too deeply" in e.error or "expected a JSON object" in e.error
                                    or e.origin.endswith("]") for e in errors)
    if as_line:
        assert [item.finding["id"] for item in items if item.finding] == [_valid_event(1)["detail"]["id"]]


# --- bugs: inputs that escape as exceptions and abort the whole run ------------------------------------------


def _event_with(**changes) -> dict:
    event = _valid_event(9)
    event["detail"].update(changes)
    return event


@pytest.mark.parametrize("name", ["big.jsonl", "big.json"])
def test_integer_over_4300_digits_is_an_invalid_document(tmp_path, name):
    path = tmp_path / name
    path.write_text(json.dumps(_valid_event(1)) + "\n" + "7" * 5000 + "\n")
    items = drive([str(path)])
    assert [item.finding is not None for item in items] == [True, False]
    assert items[1].origin == f"{path}:2" and "4300" in items[1].error


@pytest.mark.parametrize("field", ["severity", "confidence", "createdAt"])
def test_huge_integer_field_is_an_invalid_item(tmp_path, field):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(_event_with(**{field: None})).replace(f'"{field}": null', f'"{field}": ' + "9" * 400)
                    + "\n")
    items = drive([str(path)])
    assert len(items) == 1
    if field != "confidence":  # a huge confidence is only carried along (and mapped: drive() builds the report)
        assert items[0].error and field in items[0].error, items[0]


def test_nan_time_is_an_invalid_item(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_text(json.dumps(_event_with(createdAt=float("nan"))) + "\n")
    items = drive([str(path)])
    assert len(items) == 1 and items[0].error and "createdAt" in items[0].error


def test_deep_nesting_inside_a_finding_is_invalid_or_mapped(tmp_path):
    event = _event_with()
    event["detail"]["service"]["additionalInfo"]["deep"] = None
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(event).replace('"deep": null', '"deep": ' + "[" * 420 + "]" * 420) + "\n"
                    + json.dumps(_valid_event(2)) + "\n")
    items = drive([str(path)])  # checks each item's invariants, and maps every finding
    assert [item.origin for item in items] == [f"{path}:1", f"{path}:2"], "neither finding is dropped"
    assert items[0].finding is not None or "nested too deeply" in items[0].error, items[0]
    assert items[1].finding is not None


# --- the CLI: in-process, and the console script where its peak memory is measured --------------------------

# Runs the command in a fresh interpreter and reports that child's peak RSS (ru_maxrss of RUSAGE_CHILDREN
# is the largest waited-for child, so measuring from pytest's own process would be polluted by earlier tests).
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def run_measured(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, peak RSS in MB) of the console script ``gdtrustar *args``."""
    rss_file = tmp_path / "rss"
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(rss_file), *console_script(), *args],
                          capture_output=True, cwd=tmp_path, env=Cli(tmp_path).process_env(env), timeout=120)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"),
            int(rss_file.read_text()) // 1024)


def _problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("gdtrustar: invalid:")]


def _problem_origins(stderr: str) -> list[str]:
    """The origin of each ``gdtrustar: invalid: <origin>: <reason>`` line."""
    return [line[len("gdtrustar: invalid: "):].split(": ", 1)[0] for line in _problem_lines(stderr)]


def test_cli_hand_picked_bad_inputs_one_line_each(cli, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a-good.jsonl").write_text(json.dumps(_valid_event(1)) + "\n")
    (inputs / "b-random.json").write_bytes(bytes(range(255, -1, -1)) * 8)
    (inputs / "c-trunc.jsonl.gz").write_bytes(gzip.compress(json.dumps(_valid_event(2)).encode())[:-12])
    (inputs / "d-deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (inputs / "e-nul.json").write_bytes(b"\x00" * 64)
    (inputs / "f-scalar.jsonl").write_text('"just a string"\n' + json.dumps(_valid_event(3)) + "\n[1, {}]\n")
    (inputs / "g-bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(_valid_event(4)).encode())
    code, out, err = astuple(cli("send", "--dry-run", "--json", str(inputs)))
    assert code == 1, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in out.split("\n") if line]
    assert sorted(r["finding_id"] for r in records if r["action"] == "dry-run") == sorted(
        _valid_event(i)["detail"]["id"] for i in (1, 3))
    expected = ["b-random.json", "c-trunc.jsonl.gz", "d-deep.json", "e-nul.json", "f-scalar.jsonl:1",
                "f-scalar.jsonl:3 [0]", "f-scalar.jsonl:3 [1]", "g-bom.json"]
    problems = _problem_lines(err)
    assert len(problems) == len(expected) == sum(r["action"] == "invalid" for r in records), problems
    for name in expected:
        assert sum(f"{name}:" in line.replace(str(inputs) + os.sep, "") for line in problems) == 1, (name, problems)
    assert "done: 10 findings" in err


def test_cli_50_mb_line_is_one_invalid_line_with_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        fh.write(json.dumps(_valid_event(1)) + "\n")
        fh.write('{"detail-type": "GuardDuty Finding", "source": "aws.guardduty", "detail": {"title": "')
        fh.write("A" * (50 * 1024 * 1024))  # 50 MB, never closed: invalid JSON
        fh.write("\n" + json.dumps(_valid_event(2)) + "\n")
    code, out, err, peak_mb = run_measured(tmp_path, "send", "--dry-run", "--json", str(path))
    assert code == 1, err
    assert "Traceback" not in err
    assert _problem_origins(err) == [f"{path}:2"]
    assert [json.loads(line)["action"] for line in out.split("\n") if line] == ["dry-run", "invalid", "dry-run"]
    # Over the 16 MiB document limit: at most that much of the line is held, the rest is skipped in 64 KiB
    # chunks (an idle run is ~45-60 MB). 400 MB leaves margin for allocator noise but catches reading the
    # file whole or keeping lines around (each copy costs another 50-100 MB).
    assert "larger than the 16 MiB limit" in err
    assert peak_mb < 400, f"peak RSS {peak_mb} MB"


def test_cli_50_mb_finding_keeps_memory_bounded(tmp_path):
    """Over the default 16 MiB document limit, so the limit is raised: a legitimately huge finding."""
    event = _valid_event(1)
    event["detail"]["description"] = None
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        head, tail = json.dumps(event).split('"description": null')
        fh.write(head + '"description": "' + "B" * (50 * 1024 * 1024) + '"' + tail + "\n")
    code, _, err, peak_mb = run_measured(tmp_path, "send", "--dry-run", "--json", str(path),
                                         env={"GDTRUSTAR_MAX_DOCUMENT_BYTES": str(64 << 20)})
    assert code == 0, err
    assert peak_mb < 400, f"peak RSS {peak_mb} MB"


@pytest.mark.parametrize("bad", ["huge-int-line", "huge-severity", "nan-time", "deep-nesting"])
def test_cli_one_crashing_document_does_not_abort_the_run(cli, tmp_path, bad):
    lines = [json.dumps(_valid_event(1))]
    if bad == "huge-int-line":
        lines.append("7" * 5000)
    elif bad == "huge-severity":
        lines.append(json.dumps(_event_with(severity=None)).replace('"severity": null', '"severity": ' + "9" * 400))
    elif bad == "nan-time":
        lines.append(json.dumps(_event_with(createdAt=float("nan"))))
    else:
        event = _event_with()
        event["detail"]["service"]["additionalInfo"]["deep"] = None
        lines.append(json.dumps(event).replace('"deep": null', '"deep": ' + "[" * 420 + "]" * 420))
    lines.append(json.dumps(_valid_event(3)))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = astuple(cli("send", "--dry-run", "--json", str(path)))
    assert code == 1 and "unexpected" not in err, err
    assert [json.loads(line)["action"] for line in out.split("\n") if line] == ["dry-run", "invalid", "dry-run"]
    assert _problem_origins(err) == [f"{path}:2"]
