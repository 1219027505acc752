"""Ledger decisions as pure functions over rows, and the SQLite owner."""

from __future__ import annotations

import os
import stat

from gdtrustar.ledger import Bookmark, Delivered, Ledger, decide

ROW = Delivered("2024-01-01T00:00:00.000Z", "abc", "r-1")


def test_decide_new_changed_unchanged_forced():
    assert decide(None, "2024-01-01T00:00:00.000Z", "abc") == "new"
    assert decide(ROW, "2024-01-01T00:00:00.000Z", "abc") == "unchanged"
    assert decide(ROW, "2024-02-01T00:00:00.000Z", "abc") == "changed"
    assert decide(ROW, "2024-01-01T00:00:00.000Z", "other-rendering") == "changed"
    assert decide(ROW, "2024-01-01T00:00:00.000Z", "abc", force=True) == "changed"


def test_rows_are_per_station_and_enclave_and_survive_reopen(tmp_path):
    path = tmp_path / "state" / "ledger.sqlite3"
    ledger = Ledger(path, "https://a/api/1.3")
    ledger.record("enc-a", "f1", "t1", "d1", "r1")
    ledger.set_bookmark("k", Bookmark("2024", None))
    ledger.commit()
    ledger.record("enc-a", "f2", "t2", "d2", "r2")  # never committed: lost like a SIGKILL would lose it
    ledger.conn.close()
    again = Ledger(path, "https://a/api/1.3")
    assert again.lookup("enc-a", "f1") == Delivered("t1", "d1", "r1")
    assert again.lookup("enc-a", "f2") is None
    assert again.lookup("enc-b", "f1") is None
    assert again.get_bookmark("k") == Bookmark("2024", None)
    assert Ledger(path, "https://b/api/1.3").lookup("enc-a", "f1") is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_a_run_sharing_its_ledger_with_another_run_keeps_recording(cli, sim, tmp_path):
    """Another run commits to the same ledger mid-run (cron backfill + a hand-run send): both rows stay."""
    import sqlite3

    from tests.conftest import write_jsonl
    from tests.sims.guardduty import make_finding, to_eventbridge

    path = write_jsonl(tmp_path / "e.jsonl", [to_eventbridge(make_finding(i)) for i in range(30)])
    ledger = tmp_path / "ledger.sqlite3"

    def other_run_commits() -> None:
        with sqlite3.connect(str(ledger), timeout=5, isolation_level=None) as conn:
            conn.execute("INSERT INTO deliveries VALUES ('elsewhere', 'enc-z', 'f-other', 't', 'd', 'r', 0)")
        conn.close()

    sim.after(5, "upsert", other_run_commits)  # after our first reads, before our first batch is committed
    result = cli.station(sim)("send", "--json", "--state", str(ledger), str(path))
    assert result.code == 0, result.stderr
    assert result.actions() == {"created": 30}
    again = Ledger(ledger, sim.api_endpoint)
    assert all(again.lookup("enc-a", make_finding(i)["id"]) for i in range(30))
    assert Ledger(ledger, "elsewhere").lookup("enc-z", "f-other") == Delivered("t", "d", "r")
