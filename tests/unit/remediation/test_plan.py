"""The remediation planner against a table of live situations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyrotor.audit.cis import Rule
from keyrotor.core.model import AccessKey, KeyStatus, LastUsed
from keyrotor.remediation.plan import Action, UserFacts, UserPlan, plan_user

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def key(key_id: str, age_days: int, active: bool = True) -> AccessKey:
    return AccessKey(key_id, KeyStatus.ACTIVE if active else KeyStatus.INACTIVE, NOW - age_days * DAY)


def used(key_id: str, days_ago: float | None) -> LastUsed:
    return LastUsed(key_id, None if days_ago is None else NOW - days_ago * DAY, "s3", "us-east-1")


def plan(rules: set[Rule], keys: list[AccessKey], published: str | None, last: dict[str, float | None]) -> UserPlan:
    facts = UserFacts(keys, published, {k: used(k, d) for k, d in last.items()})
    return plan_user("u", rules, facts, now=NOW, recent=DAY, max_age=90 * DAY, unused=45 * DAY)


TWO = {Rule.MULTIPLE_ACTIVE_KEYS}


@pytest.mark.parametrize(
    ("keys", "published", "last", "action", "retire", "keep"),
    [
        ([key("A", 200), key("B", 10)], "A", {"A": 0.1, "B": 0.1}, Action.RETIRE, "B", "A"),  # Vault wins
        ([key("A", 200), key("B", 10)], None, {"A": 5, "B": 0.1}, Action.RETIRE, "A", "B"),  # most recent use
        ([key("A", 200), key("B", 10)], None, {"A": None, "B": None}, Action.RETIRE, "A", "B"),  # newest
        ([key("A", 200), key("B", 10)], None, {"A": 0.2, "B": 0.1}, Action.NEEDS_PERSON, None, None),
        ([key("A", 200), key("B", 10)], "X", {"A": 0.2, "B": 0.1}, Action.NEEDS_PERSON, None, None),
    ],
)
def test_two_active_keys(
    keys: list[AccessKey],
    published: str | None,
    last: dict[str, float | None],
    action: Action,
    retire: str | None,
    keep: str | None,
) -> None:
    result = plan(TWO, keys, published, last)
    assert (result.action, result.key_id, result.keep_key_id) == (action, retire, keep)


@pytest.mark.parametrize(
    ("rules", "age", "days_ago", "action"),
    [
        ({Rule.KEY_TOO_OLD}, 120, 1, Action.ROTATE),
        ({Rule.KEY_UNUSED}, 120, 60, Action.DEACTIVATE_UNUSED),
        ({Rule.KEY_UNUSED, Rule.KEY_TOO_OLD}, 120, 60, Action.DEACTIVATE_UNUSED),  # no point rotating an unused key
        ({Rule.KEY_UNUSED}, 60, None, Action.DEACTIVATE_UNUSED),  # never used and older than 45 days
        ({Rule.KEY_UNUSED, Rule.KEY_TOO_OLD}, 120, 2, Action.ROTATE),  # used since the report: old, not unused
        ({Rule.KEY_TOO_OLD}, 10, 1, Action.NOTHING),  # rotated since the report
    ],
)
def test_single_active_key(rules: set[Rule], age: int, days_ago: float | None, action: Action) -> None:
    assert plan(rules, [key("A", age)], None, {"A": days_ago}).action is action


def test_no_active_key_left() -> None:
    assert plan({Rule.KEY_TOO_OLD}, [key("A", 200, active=False)], None, {}).action is Action.NOTHING


def test_a_user_whose_rotation_has_not_ended_gets_no_second_remedy() -> None:
    facts = UserFacts([key("A", 200)], "A", {"A": used("A", 0.1)}, "rotation r1 (phase published)")
    result = plan_user("u", {Rule.KEY_TOO_OLD}, facts, now=NOW, recent=DAY, max_age=90 * DAY, unused=45 * DAY)
    assert result.action is Action.IN_PROGRESS and "rotation r1 (phase published) has not ended" in result.reason
