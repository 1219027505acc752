"""The action and decision enums keep the JSON contract: plain strings in every record and line."""

from __future__ import annotations

import json

from gdtrustar.actions import ENGINE_ACTIONS, UNDELIVERED, Action, Decision
from gdtrustar.delivery import Outcome
from gdtrustar.ledger import Delivered, decide
from gdtrustar.text import json_text

CONTRACT = ("created", "updated", "unchanged", "skipped", "dry-run", "invalid", "failed")  # README, --json


def test_action_values_are_the_contract_in_summary_order():
    assert tuple(action.value for action in ENGINE_ACTIONS) == CONTRACT
    assert list(CONTRACT) == list(ENGINE_ACTIONS)  # equal as strings, both ways
    assert {Action(word) for word in (*CONTRACT, "queued")} == set(Action)  # queued: backfill --via-queue


def test_records_hold_plain_strings_byte_for_byte():
    for action in Action:
        outcome = Outcome(action, "f.json:1", "id-1", "enc", "gdtrustar-enc-id-1")
        as_enum = json_text(outcome.record())
        as_str = json_text(Outcome(action.value, "f.json:1", "id-1", "enc", "gdtrustar-enc-id-1").record())
        assert as_enum == as_str
        assert f'"action": "{action.value}"' in as_enum
        assert json.dumps(action) == json.dumps(action.value)
        assert type(json.loads(as_enum)["action"]) is str
        assert json_text({"failure": outcome.record()}, sort_keys=True, default=str) == \
            json_text({"failure": json.loads(as_str)}, sort_keys=True, default=str)


def test_text_of_a_member_is_its_value():
    """Lines like ``gdtrustar: failed: origin: why`` and the summary's counts format members directly."""
    for member in (*Action, *Decision):
        assert str(member) == f"{member}" == format(member, "") == member.value
        assert "%s" % member == member.value  # noqa: UP031 - logging formats this way
        assert type(str(member)) is str
    assert f"{Action.DRY_RUN:>9}" == "  dry-run"


def test_undelivered_is_invalid_and_failed_and_matches_strings():
    assert UNDELIVERED == {"invalid", "failed"}
    assert "failed" in UNDELIVERED and "created" not in UNDELIVERED


def test_decide_returns_decisions():
    row = Delivered("2024-01-01T00:00:00.000Z", "abc", "r1")
    assert decide(None, "2024-01-01T00:00:00.000Z", "abc") is Decision.NEW
    assert decide(row, "2024-01-01T00:00:00.000Z", "abc") is Decision.UNCHANGED
    assert decide(row, "2024-02-01T00:00:00.000Z", "abc") is Decision.CHANGED
    assert [d.value for d in Decision] == ["new", "changed", "unchanged"]
