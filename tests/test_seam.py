"""The backend seam (issue 12 §3): the engine needs a ``writer.Writer`` and a payload function, nothing more.

* A second writer, a real class defined here, drives the real engine with no Station, no SDK and no
  v1.3 payload: the engine takes the protocol, not the v1.3 client.
* The v1.3 payload moved out of the mapper into the v1.3 backend; the ledger's digests are pinned to
  the values the code before the move produced, so existing ledgers stay valid.
* The dry-run ``--json`` ``report`` record keeps exactly the v1.3 keys.
* The pacing/retry loop (``retrying.Retrier``) runs any backend's calls: here, plain functions.
* ``backends`` chooses the backend in one place; importing the engine or the SDK door does not pull in
  the v1.3 backend or our logging (the logs <-> sdk import cycle is gone).
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

from gdtrustar import backends, station
from gdtrustar.delivery import Engine
from gdtrustar.errors import DeadlineExceededError, PermanentDeliveryError, RetriableError
from gdtrustar.findings import normalize
from gdtrustar.items import items_from
from gdtrustar.ledger import Ledger
from gdtrustar.mapper import Report, build_report
from gdtrustar.outcomes import Outcome
from gdtrustar.pacing import Backoff, Pacer
from gdtrustar.retrying import FINDING_DEADLINE, MAX_SERVER_WAIT, Retrier
from gdtrustar.settings import Settings
from gdtrustar.sources import Document
from gdtrustar.writer import Payload, Writer, WriteResult, digest
from tests.pacesim import Clock
from tests.sims.guardduty import make_finding

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_events"
V13_KEYS = {"title", "reportBody", "timeBegan", "externalTrackingId", "externalUrl", "enclaveIds",
            "distributionType"}
# Computed by Report.digest() of the code before the seam (commit 0f52d89): ledgers hold these.
PINNED = [
    ("eventbridge-seed-integration-guide.json", "enc-a",
     "d347f344b9e5403ed83cf7b65ed2a3c9e664070122fbe021fb00fa7de73d1f8e"),
    ("eventbridge-ec2-port-probe.json", "6f3c1a52-0b7e-4d4a-9f0e-2c8d5b7a1e90",
     "d6556b3cce48d511b128e05411d6743ad78755fb784f1b3c9728663009212830"),
]


# -- a second backend: a writer that keeps reports in memory ----------------------------------------------
class MemoryWriter:
    """A complete ``Writer``: keyed by external id, one report per key, told to fail when asked."""

    def __init__(self, store: dict[str, Report], failing: Optional[set[str]] = None) -> None:
        self.store = store
        self.failing = failing or set()
        self.deadline: Optional[float] = None

    def write(self, report: Report) -> WriteResult:
        if report.external_id in self.failing:
            raise PermanentDeliveryError("refused by the memory backend", status=400)
        existed = report.external_id in self.store
        self.store[report.external_id] = report
        return WriteResult(f"mem-{report.external_id}", existed, 1)

    def check(self, enclave_ids: tuple[str, ...]) -> None:
        pass


def memory_payload(report: Report) -> Payload:
    return {"t": report.title, "id": report.external_id}


def engine_run(writers: Optional[Callable[[], Writer]], documents: list, ledger: Optional[Ledger] = None,
               enclaves: tuple[str, ...] = ("enc-a", "enc-b")) -> list[Outcome]:
    outcomes: list[Outcome] = []
    engine = Engine(enclave_ids=enclaves, sink=outcomes.append, render=memory_payload, writers=writers,
                    ledger=ledger, concurrency=3)
    engine.run(items_from([Document(f"doc {i}", doc) for i, doc in enumerate(documents)]))
    return outcomes


def test_the_engine_delivers_through_any_writer():
    store: dict[str, Report] = {}
    findings = [make_finding(i) for i in range(6)]
    first = engine_run(lambda: MemoryWriter(store), findings)
    assert sorted(o.action for o in first) == ["created"] * 12
    assert len(store) == 12 and all(isinstance(r, Report) for r in store.values())
    assert {r.enclave_id for r in store.values()} == {"enc-a", "enc-b"}
    assert {o.report_id for o in first} == {f"mem-{key}" for key in store}
    again = engine_run(lambda: MemoryWriter(store), findings)  # no ledger: the writer says it existed
    assert sorted(o.action for o in again) == ["updated"] * 12


def test_the_engine_keeps_its_ledger_over_the_backends_payload(tmp_path):
    store: dict[str, Report] = {}
    ledger = Ledger(tmp_path / "l.sqlite3", "memory")
    findings = [make_finding(i) for i in range(3)]
    engine_run(lambda: MemoryWriter(store), findings, ledger)
    row = ledger.lookup("enc-a", findings[0]["id"])
    report = build_report(normalize(findings[0]), "enc-a")
    assert row is not None and row.digest == digest(memory_payload(report))
    store.clear()
    assert {o.action for o in engine_run(lambda: MemoryWriter(store), findings, ledger)} == {"unchanged"}
    assert store == {}
    ledger.close()


def test_a_failing_writer_is_a_listed_failure_and_a_dry_run_renders_the_backends_payload():
    store: dict[str, Report] = {}
    finding = make_finding(1)
    refused = build_report(normalize(finding), "enc-b").external_id
    outcomes = engine_run(lambda: MemoryWriter(store, {refused}), [finding])
    by_enclave = {o.enclave_id: o for o in outcomes}
    assert by_enclave["enc-a"].action == "created"
    assert by_enclave["enc-b"].action == "failed" and "memory backend" in (by_enclave["enc-b"].error or "")
    dry = engine_run(None, [finding])
    assert [o.action for o in dry] == ["dry-run", "dry-run"]
    assert dry[0].report == memory_payload(build_report(normalize(finding), dry[0].enclave_id or ""))


# -- the v1.3 payload and the ledger digest, as before the move ------------------------------------------
@pytest.mark.parametrize(("name", "enclave", "pinned"), PINNED)
def test_v13_digest_is_byte_identical_to_before_the_seam(name, enclave, pinned):
    report = build_report(normalize(json.loads((SAMPLES / name).read_text())), enclave)
    assert digest(station.payload(report)) == pinned


def test_a_ledger_row_written_before_the_seam_still_means_unchanged(cli, sim, tmp_path):
    name, enclave, pinned = PINNED[0]
    sample = SAMPLES / name
    finding = normalize(json.loads(sample.read_text()))
    state = tmp_path / "ledger.sqlite3"
    old = Ledger(state, sim.api_endpoint)
    old.record(enclave, finding["id"], finding["updatedAt"], pinned, "report-from-before")
    old.commit()
    old.close()
    result = cli.station(sim, enclave)("send", "--json", "--state", str(state), str(sample))
    assert result.code == 0, result.stderr
    assert [(r["action"], r["report_id"]) for r in result.records] == [("unchanged", "report-from-before")]
    assert sim.count("upsert") == 0


def test_dry_run_json_report_record_is_the_v13_payload(cli, tmp_path):
    sample = SAMPLES / "eventbridge-seed-integration-guide.json"
    result = cli("send", "--dry-run", "--json", "--enclave-id", "enc-a", str(sample))
    assert result.code == 0, result.stderr
    [record] = result.records
    assert set(record["report"]) == V13_KEYS
    expected = station.payload(build_report(normalize(json.loads(sample.read_text())), "enc-a"))
    assert record["report"] == expected
    assert record["report"]["enclaveIds"] == ["enc-a"] and record["report"]["distributionType"] == "ENCLAVE"
    assert record["report"]["timeBegan"] == "2017-10-31T23:16:23+00:00"


def test_v13_payload_sends_an_empty_time_as_null():
    report = build_report({"id": "f-odd", "title": "T", "severity": 7.5}, "enc-a")
    assert report.time_began == "" and station.payload(report)["timeBegan"] is None
    assert digest(station.payload(report)) == "771cb191b788e36ded6f08d96399c173c10c3ee95110984d78b122ff670315ba"


# -- the retry loop knows error classes and the pacer, not a wire ----------------------------------------
def retrier(clock: Clock, attempts: int = 4) -> Retrier:
    pacer = Pacer(600_000, clock=clock, sleep=clock.sleep)
    return Retrier(pacer, Backoff(base=1, cap=1, attempts=attempts, rand=lambda: 1.0), clock.sleep)


def test_retrier_backs_off_on_retriable_errors_and_stops_at_permanent_ones():
    clock = Clock()
    calls: list[float] = []

    def flaky(deadline: float) -> str:
        calls.append(deadline)
        if len(calls) < 3:
            raise RetriableError("503 from somewhere")
        return "done"

    assert retrier(clock).run(flaky) == "done"
    assert clock.slept == [1.0, 1.0] and len(calls) == 3
    assert calls[0] == pytest.approx(1000.0 + FINDING_DEADLINE)

    def refused(deadline: float) -> str:
        calls.append(deadline)
        raise PermanentDeliveryError("400", status=400)

    calls.clear()
    with pytest.raises(PermanentDeliveryError):
        retrier(clock).run(refused)
    assert len(calls) == 1


def raising(error: Exception) -> Callable[[float], str]:
    def attempt(deadline: float) -> str:
        raise error
    return attempt


def test_retrier_counts_429s_as_flow_control_and_keeps_the_deadline():
    clock = Clock()
    tries: list[int] = []

    def throttled(deadline: float) -> str:
        tries.append(1)
        if len(tries) <= 5:  # more 429s than attempts: none of them is an attempt
            raise RetriableError("429", wait=2.0)
        return "ok"

    assert retrier(clock, attempts=2).run(throttled) == "ok"
    with pytest.raises(RetriableError, match="429"):  # a spent quota fails at once
        retrier(clock).run(raising(RetriableError("429", wait=MAX_SERVER_WAIT + 1)))
    before = list(clock.slept)
    with pytest.raises(DeadlineExceededError, match="503"):
        retrier(clock).run(raising(RetriableError("503")), deadline=clock.now + 0.5)
    assert clock.slept == before  # nothing slept past the deadline


def test_retrier_paced_calls_report_429s_to_the_shared_pacer():
    clock = Clock()
    loop = retrier(clock)

    def throttled() -> str:
        raise RetriableError("429", wait=30.0)

    with pytest.raises(RetriableError):
        loop.paced(throttled, None)
    assert loop.paced(lambda: "after the pause", None) == "after the pause"
    assert clock.now >= 1030.0  # the next call waited out the server's pause


# -- one place chooses the backend -----------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "version"), [
    ("https://api.trustar.co/api/1.3", "1.3"),
    ("https://api.trustar.co/api/1.3/", "1.3"),
    ("http://127.0.0.1:8080/api/1.3", "1.3"),
    ("https://proxy.example/trustar", "1.3"),  # no version named: v1.3, as always
    ("https://api.trustar.co/api/2.0", "1.3"),  # no 2.0 backend yet: spoken to as v1.3, as before
])
def test_the_endpoint_names_the_backend(endpoint, version):
    assert backends.version_of(endpoint) == version
    assert backends.backend_for(Settings(api_endpoint=endpoint)) is station


@pytest.mark.parametrize("version", sorted(backends.BACKENDS))
def test_every_registered_backend_has_the_two_functions(version):
    module = importlib.import_module(backends.BACKENDS[version])
    assert list(inspect.signature(module.payload).parameters) == ["report"]
    assert list(inspect.signature(module.open_writers).parameters) == ["settings", "pacer", "sleep"]
    rendered = module.payload(build_report(normalize(make_finding(1)), "enc-a"))
    assert isinstance(rendered, dict) and json.loads(json.dumps(rendered)) == rendered  # digestible JSON


def test_the_engine_and_the_sdk_door_do_not_pull_in_the_v13_backend_or_our_logging():
    code = ("import sys; import gdtrustar.delivery, gdtrustar.writer, gdtrustar.retrying; "
            "bad = [m for m in ('gdtrustar.station', 'gdtrustar.tokens', 'trustar') if m in sys.modules]; "
            "import gdtrustar.sdk; bad += ['gdtrustar.logs'] if 'gdtrustar.logs' in sys.modules else []; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
