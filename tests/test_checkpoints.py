"""Checkpoints and the ledger's "newest wins": issue 11 items 1 and 2 through the console script, plus the rules.

* A backfill bookmark narrows only a run whose window it covers (``backfill --since 2d`` must not
  make a later plain ``backfill`` skip older findings).
* An older copy of a finding than the one delivered is ``unchanged`` with no Station call, across
  runs and within one run; ``--force`` still writes it.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from gdtrustar.checkpoint import Checkpoint
from gdtrustar.items import Item
from gdtrustar.ledger import Bookmark, Delivered, decide
from gdtrustar.selection import Selection
from tests.conftest import write_jsonl
from tests.sims.guardduty import GuardDutyEmulator, make_finding, to_eventbridge

NOW = datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ext(fid: str, enclave: str = "enc-a") -> str:
    return base64.b64encode(f"{enclave}|{fid}".encode()).decode()


# -- issue 11 item 1: a --since bookmark must not poison a wider run ------------------------------------------------


@pytest.fixture
def gd():
    with GuardDutyEmulator() as emulator:
        yield emulator


def test_backfill_since_then_plain_backfill_sends_the_older_findings(cli, gd, sim):
    cli.station(sim)
    cli.env["AWS_ENDPOINT_URL_GUARDDUTY"] = gd.url
    det = gd.add_detector("us-east-1")
    old = [make_finding(i, detector_id=det, updated_at=iso(NOW - timedelta(days=10, minutes=i))) for i in range(5)]
    new = [make_finding(100 + i, detector_id=det, updated_at=iso(NOW - timedelta(hours=20, minutes=i)))
           for i in range(4)]
    gd.add_findings("us-east-1", det, old + new)
    narrow = cli("backfill", "--region", "us-east-1", "--since", "2d", "--json")
    assert narrow.code == 0, narrow.stderr
    assert {r["finding_id"] for r in narrow.records} == {f["id"] for f in new}
    wide = cli("backfill", "--region", "us-east-1", "--json")
    assert wide.code == 0, wide.stderr
    assert {r["finding_id"] for r in wide.records if r["action"] == "created"} == {f["id"] for f in old}
    by_ext = sim.reports_by_external_id()
    assert all(len(by_ext[("enc-a", ext(f["id"]))]) == 1 for f in old + new)
    # the plain run's bookmark covers all time: a third plain run, and a --since run, both resume from it
    listings = len([c for c in gd.calls if c.operation == "ListFindings"])
    third = cli("backfill", "--region", "us-east-1", "--json")
    assert third.actions() == {"unchanged": 1}  # only the finding at the bookmark itself is re-read
    since = cli("backfill", "--region", "us-east-1", "--since", "3d", "--json")
    assert since.actions() == {"unchanged": 1}
    assert len([c for c in gd.calls if c.operation == "ListFindings"]) == listings + 2


def test_bookmark_window_rules():
    day = 86_400_000
    everything = Bookmark("2024-05-10T00:00:00.000Z", None)
    two_days = Bookmark("2024-05-10T00:00:00.000Z", 10 * day)
    assert everything.covers(None) and everything.covers(5 * day)
    assert not two_days.covers(None)  # the poisoning case: a --since bookmark for a plain run
    assert not two_days.covers(9 * day) and two_days.covers(10 * day) and two_days.covers(11 * day)
    assert Bookmark.loads("2024-05-10T00:00:00.000Z") is None  # an old bookmark without its window is not trusted
    assert Bookmark.loads(two_days.dumps()) == two_days


# -- issue 11 item 2: an older copy never overwrites a newer report -------------------------------------------------


def _versions():
    base = make_finding(7)
    newer = dict(base, updatedAt="2024-03-02T10:00:00.000Z", title="newer title")
    older = dict(base, updatedAt="2024-03-01T10:00:00.000Z", title="older title")
    return newer, older


def test_an_older_copy_in_a_later_run_is_unchanged_with_no_station_call(cli, sim, tmp_path):
    newer, older = _versions()
    cli.station(sim)
    first = cli("send", "--json", str(write_jsonl(tmp_path / "new.jsonl", [to_eventbridge(newer)])))
    assert first.actions() == {"created": 1}
    writes = sim.count("upsert")
    stale = cli("send", "--json", str(write_jsonl(tmp_path / "old.jsonl", [to_eventbridge(older)])))
    assert stale.code == 0, stale.stderr
    assert stale.actions() == {"unchanged": 1}
    assert sim.count("upsert") == writes
    assert sim.reports_by_external_id()[("enc-a", ext(newer["id"]))][0]["title"].endswith("newer title")
    forced = cli("send", "--json", "--force", str(tmp_path / "old.jsonl"))
    assert forced.actions() == {"updated": 1}  # --force still writes what it is given


def test_an_older_copy_later_in_the_same_run_does_not_overwrite(cli, sim, tmp_path):
    newer, older = _versions()
    path = write_jsonl(tmp_path / "both.jsonl", [to_eventbridge(newer), to_eventbridge(older)])
    cli.station(sim)
    result = cli("send", "--json", "--concurrency", "4", str(path))
    assert result.code == 0, result.stderr
    assert [r["action"] for r in result.records] == ["created", "unchanged"]
    assert sim.count("upsert") == 1
    assert sim.reports_by_external_id()[("enc-a", ext(newer["id"]))][0]["title"].endswith("newer title")


def test_decide_compares_times_as_instants():
    row = Delivered("2024-03-02T10:00:00.000Z", "digest", "r-1")
    assert decide(row, "2024-03-01T10:00:00.000Z", "other") == "unchanged"  # older: the newer report stays
    assert decide(row, "2024-03-02T11:00:00+01:00", "digest") == "unchanged"  # the same instant
    assert decide(row, "2024-03-02T10:00:00.001Z", "digest") == "changed"
    assert decide(row, "2024-03-02T10:00:00.000Z", "other") == "changed"  # same time, new rendering
    assert decide(row, "2024-03-01T10:00:00.000Z", "other", force=True) == "changed"
    assert decide(row, "not a time", "digest") == "changed"  # what cannot be ordered is written, never dropped


# -- the checkpoint rule ------------------------------------------------------------------------------------------


def _unit():
    done = []
    return Checkpoint(done.append), done


def test_checkpoint_acknowledges_only_a_sealed_fully_handled_unit():
    unit, done = _unit()
    a, b = unit.hold(Item("x:1", finding={})), unit.hold(Item("x:2", finding={}))
    a.receipt.settle(True)
    unit.seal()
    assert done == []  # b still in flight
    b.receipt.settle(True)
    assert done == [True]
    failed, done2 = _unit()
    failed.hold(Item("y:1")).receipt.settle(False)  # invalid or failed: listed in failures, not delivered
    failed.seal()
    assert done2 == []
    unsealed, done3 = _unit()
    unsealed.hold(Item("z:1")).receipt.settle(True)
    assert done3 == []  # the source never finished handing it over (Ctrl-C, crash)
    narrowed, done4 = _unit()
    narrowed.hold(Item("w:1")).receipt.settle(True, narrowed=True)
    narrowed.seal()
    assert done4 == [False]  # delivered what it was asked for, but not complete


def test_selection_matches_backfills_criteria():
    from gdtrustar.guardduty import Criteria

    finding = {"region": "eu-west-1", "accountId": "1", "type": "T", "severity": 6.9,
               "updatedAt": "2024-05-02T00:00:00.000Z"}
    ms = 1714608000000  # 2024-05-02T00:00:00Z
    assert Selection(Criteria(min_severity=6.5)).admits(finding)  # rounded down, as GuardDuty's criterion
    assert not Selection(Criteria(min_severity=7.0)).admits(finding)
    assert Selection(Criteria(since_ms=ms, until_ms=ms)).admits(finding)  # inclusive both ends
    assert not Selection(Criteria(since_ms=ms + 1)).admits(finding)
    assert not Selection(regions=("us-east-1",)).admits(finding)
    assert not Selection(Criteria(accounts=("2",))).admits(finding)
    assert not Selection(Criteria(since_ms=0)).admits(dict(finding, updatedAt=None))
