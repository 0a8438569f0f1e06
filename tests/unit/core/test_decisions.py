"""The pure decisions, checked against tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyrotor.core.decisions import LeaseVerdict, Quiet, check_quiet, judge_lease, orphan_keys, plan_slots
from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import AccessKey, KeyStatus, LastUsed, Phase, RotationState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A, OFF = KeyStatus.ACTIVE, KeyStatus.INACTIVE


def key(key_id: str, status: KeyStatus = A, age_days: int = 100) -> AccessKey:
    return AccessKey(key_id, status, T0 - timedelta(days=age_days))


def state(**changes: object) -> RotationState:
    base = RotationState(
        rotation_id="r1",
        user_name="alice",
        account_id="123",
        phase=Phase.STARTED,
        timings={"quiet_period": 60, "poll_interval": 10, "max_wait": 600, "grace_period": 0},
        started_at=T0,
        started_by="test",
    )
    return base.evolve(**changes)


@pytest.mark.parametrize(
    ("keys", "old", "delete"),
    [
        ([], None, ()),
        ([key("K1")], "K1", ()),
        ([key("K1", OFF)], None, ()),
        ([key("K1", OFF), key("K2")], "K2", ("K1",)),
        ([key("K1"), key("K2", OFF)], "K1", ("K2",)),
        ([key("K1", OFF), key("K2", OFF)], None, ("K1", "K2")),
    ],
)
def test_plan_slots_chooses_the_active_key_and_frees_a_slot(
    keys: list[AccessKey], old: str | None, delete: tuple[str, ...]
) -> None:
    plan = plan_slots("alice", keys)
    assert (plan.old_key.key_id if plan.old_key else None) == old
    assert plan.delete == delete


def test_plan_slots_refuses_two_active_keys() -> None:
    with pytest.raises(PreconditionFailed, match="two active access keys"):
        plan_slots("alice", [key("K1"), key("K2")])


@pytest.mark.parametrize(
    ("keys", "stashed", "expected"),
    [
        (["K1"], None, []),
        (["K1", "K9"], None, ["K9"]),
        (["K1", "K9"], "K9", []),
        (["K9"], None, ["K9"]),
    ],
)
def test_orphans_are_keys_this_rotation_created_without_a_stashed_secret(
    keys: list[str], stashed: str | None, expected: list[str]
) -> None:
    current = state(old_key_id="K1", keys_before=("K1",))
    assert orphan_keys([key(k) for k in keys], current, stashed) == expected


PUBLISHED = T0
QUIET = timedelta(seconds=60)
POLL = timedelta(seconds=10)
DEADLINE = T0 + timedelta(seconds=600)


@pytest.mark.parametrize(
    ("used_after_publish", "now_after_publish", "outcome", "next_in"),
    [
        (None, 0, Quiet.WAIT, 10),  # never used: still needs the quiet period after the publish
        (None, 60, Quiet.QUIET, None),
        (-30, 59, Quiet.WAIT, 60),  # used before the publish: the clock starts at the publish; next look at quiet time
        (-30, 60, Quiet.QUIET, None),
        (30, 60, Quiet.WAIT, 70),  # used after the publish: the clock restarts at that use
        (30, 90, Quiet.QUIET, None),
        (590, 600, Quiet.DEADLINE, None),  # still in use at the deadline: never deactivate
        (540, 595, Quiet.WAIT, 600),  # next look is capped at the deadline
    ],
)
def test_check_quiet(
    used_after_publish: float | None, now_after_publish: float, outcome: Quiet, next_in: float | None
) -> None:
    used_at = None if used_after_publish is None else PUBLISHED + timedelta(seconds=used_after_publish)
    check = check_quiet(
        published_at=PUBLISHED,
        last_used=LastUsed("K1", used_at, "sts", "us-east-1"),
        quiet_period=QUIET,
        poll_interval=POLL,
        deadline=DEADLINE,
        now=PUBLISHED + timedelta(seconds=now_after_publish),
    )
    assert check.outcome is outcome
    expected_next = None if next_in is None else PUBLISHED + timedelta(seconds=next_in)
    assert check.next_check_at == expected_next


def lease(owner: str | None, expires_in: float, run: str | None = "run-a") -> dict[str, object]:
    return {"owner": owner, "flow_run_id": run, "expires_at": (T0 + timedelta(seconds=expires_in)).isoformat()}


@pytest.mark.parametrize(
    ("record", "verdict"),
    [
        (None, LeaseVerdict.ACQUIRE),
        ({"owner": None}, LeaseVerdict.ACQUIRE),
        (lease("other", 30), LeaseVerdict.WAIT),
        (lease("other", -1), LeaseVerdict.ACQUIRE),
        (lease("other", 0), LeaseVerdict.ACQUIRE),
        (lease("me", 30), LeaseVerdict.ACQUIRE),
        (lease("other", 30, run="run-b"), LeaseVerdict.ACQUIRE),  # same Prefect flow run, e.g. its retry
    ],
)
def test_judge_lease(record: dict[str, Any] | None, verdict: LeaseVerdict) -> None:
    assert judge_lease(record, owner="me", flow_run_id="run-b", now=T0) is verdict


def test_phase_order() -> None:
    assert Phase.PUBLISHED.reached(Phase.CREATED)
    assert not Phase.CREATED.reached(Phase.PUBLISHED)
    assert not Phase.FAILED.reached(Phase.STARTED)
    assert Phase.COMPLETED.terminal and Phase.FAILED.terminal and not Phase.DEACTIVATED.terminal


def test_state_round_trips_through_its_record() -> None:
    original = state(
        phase=Phase.DEACTIVATED,
        old_key_id="K1",
        new_key_id="K2",
        keys_before=("K1",),
        delete_after=T0 + timedelta(days=7),
        version=4,
    )
    assert RotationState.from_record(original.to_record(), 4) == original
