"""The pure decisions, checked against tables of cases."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from keyrotor.core.decisions import (
    LeaseVerdict,
    check_quiet,
    deletion_due,
    judge_lease,
    old_key_of,
    orphan_keys,
    slots_to_free,
    within_cooldown,
)
from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import (
    AccessKey,
    KeyStatus,
    LastUsed,
    LeaseData,
    PauseKind,
    Phase,
    Quiet,
    Rollback,
    RotationState,
    from_record,
    to_record,
)
from tests.unit.factories import T0, TIMINGS, lease, state

A, OFF = KeyStatus.ACTIVE, KeyStatus.INACTIVE


def key(key_id: str, status: KeyStatus = A, age_days: int = 100) -> AccessKey:
    return AccessKey(key_id, status, T0 - timedelta(days=age_days))


@pytest.mark.parametrize(
    ("keys", "old"),
    [([], None), ([key("K1")], "K1"), ([key("K1", OFF)], None), ([key("K1", OFF), key("K2")], "K2")],
)
def test_the_old_key_is_the_one_active_key(keys: list[AccessKey], old: str | None) -> None:
    found = old_key_of("alice", keys)
    assert (found.key_id if found else None) == old


def test_two_active_keys_are_refused() -> None:
    with pytest.raises(PreconditionFailed, match="two active access keys"):
        old_key_of("alice", [key("K1"), key("K2")])


@pytest.mark.parametrize(
    ("keys", "keep", "freed"),
    [
        ([], None, ()),
        ([key("K1")], "K1", ()),  # one key: room for the new one already
        ([key("K1", OFF)], None, ()),
        ([key("K1", OFF, age_days=200), key("K2")], "K2", ("K1",)),
        ([key("K1"), key("K2", OFF)], "K1", ("K2",)),
        ([key("K1", OFF, age_days=200), key("K2", OFF)], None, ("K1",)),  # the oldest, and only as many as needed
        ([key("K1", OFF), key("K2")], "K1", ()),  # the old key is never freed, even inactive
        ([key("K1"), key("K2")], "K1", ()),  # never an active key
    ],
)
def test_one_rule_frees_just_enough_inactive_keys(
    keys: list[AccessKey], keep: str | None, freed: tuple[str, ...]
) -> None:
    assert slots_to_free(keys, keep) == freed


@pytest.mark.parametrize(
    ("keys", "expected"),
    [(["K1"], []), (["K1", "K9"], ["K9"]), (["K9"], ["K9"])],
)
def test_orphans_are_keys_this_rotation_created(keys: list[str], expected: list[str]) -> None:
    current = state(old_key_id="K1", keys_before=("K1",))
    assert orphan_keys([key(k) for k in keys], current) == expected


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
        since=PUBLISHED,
        last_used=LastUsed("K1", used_at, "sts", "us-east-1"),
        quiet_period=QUIET,
        poll_interval=POLL,
        deadline=DEADLINE,
        now=PUBLISHED + timedelta(seconds=now_after_publish),
    )
    assert check.outcome is outcome
    expected_next = None if next_in is None else PUBLISHED + timedelta(seconds=next_in)
    assert check.next_check_at == expected_next


@pytest.mark.parametrize(
    ("record", "verdict"),
    [
        (None, LeaseVerdict.ACQUIRE),
        (LeaseData(owner=None), LeaseVerdict.ACQUIRE),
        (lease("other", 30), LeaseVerdict.WAIT),
        (lease("other", -1), LeaseVerdict.ACQUIRE),
        (lease("other", 0), LeaseVerdict.ACQUIRE),
        (lease("me", 30), LeaseVerdict.ACQUIRE),
        (lease("other", 30, run="run-b"), LeaseVerdict.ACQUIRE),  # same Prefect flow run, e.g. its retry
    ],
)
def test_judge_lease(record: LeaseData | None, verdict: LeaseVerdict) -> None:
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
    assert from_record(RotationState, to_record(original), 4) == original


DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("previous_due", "due", "refused"),
    [
        (T0, T0 + DAY, False),  # a daily schedule: exactly one cooldown apart, every day
        (T0, T0 + DAY - timedelta(seconds=1), True),
        (T0, T0 + timedelta(minutes=5), True),  # a person, minutes after the last rotation
        (T0, T0 + 2 * DAY, False),
    ],
)
def test_the_cooldown_counts_between_due_times(previous_due: datetime, due: datetime, refused: bool) -> None:
    assert within_cooldown(previous_due, due, DAY) is refused


def test_a_daily_schedule_is_never_refused_however_late_each_run_created_its_key() -> None:
    """Day after day, each run starts a few seconds after its scheduled time, and the last one started later than
    the next one will: counted from the keys' creation (the old rule) that was under a day and refused every
    other day; counted between due times it never is."""
    created_yesterday = T0 + timedelta(seconds=40)  # yesterday's run was slow to start: it created its key late
    due_today = T0 + DAY  # today's run is due exactly one day after yesterday's
    starts_today = due_today + timedelta(seconds=5)
    assert starts_today - created_yesterday < DAY, "the old rule (now - created >= cooldown) would have refused"
    assert not within_cooldown(T0, due_today, DAY)


@pytest.mark.parametrize(
    ("record", "due"),
    [
        (state(phase=Phase.DEACTIVATED, delete_after=T0), True),
        (state(phase=Phase.DEACTIVATED, delete_after=T0 + DAY), False),
        (state(phase=Phase.PUBLISHED, delete_after=T0), False),
        (state(phase=Phase.ROLLED_BACK, rollback=Rollback(T0, Phase.PUBLISHED, delete_after=T0)), True),
        (
            state(
                phase=Phase.ROLLED_BACK, rollback=Rollback(T0, Phase.PUBLISHED, delete_after=T0, new_key_deleted_at=T0)
            ),
            False,
        ),
        (state(phase=Phase.ROLLED_BACK, rollback=Rollback(T0, Phase.PUBLISHED)), False),
    ],
)
def test_a_deletion_is_due_for_a_deactivated_old_key_or_a_rolled_back_new_key(record: RotationState, due: bool) -> None:
    assert deletion_due(record, T0 + timedelta(seconds=1)) is due


@pytest.mark.parametrize(
    ("used_after_publish", "now_after_publish", "parks"),
    [
        (None, 0, True),  # a whole quiet period (60 s) ahead: worth a process start when woken
        (None, 31, False),  # quiet in 29 s at the soonest: waited in the process
        (-30, 30, True),  # used before the publish: the clock starts at the publish, quiet in 30 s
        (40, 50, True),  # used after the publish: quiet in 50 s at the soonest
        (540, 575, False),  # the deadline in 25 s ends the wait sooner than the quiet period
    ],
)
def test_a_run_parks_only_when_its_wait_cannot_end_soon(
    used_after_publish: float | None, now_after_publish: float, parks: bool
) -> None:
    used_at = None if used_after_publish is None else PUBLISHED + timedelta(seconds=used_after_publish)
    now = PUBLISHED + timedelta(seconds=now_after_publish)
    check = check_quiet(
        since=PUBLISHED,
        last_used=LastUsed("K1", used_at),
        quiet_period=QUIET,
        poll_interval=POLL,
        deadline=DEADLINE,
        now=now,
    )
    assert check.outcome is Quiet.WAIT
    assert check.worth_parking(now, timedelta(seconds=30)) is parks


def test_a_look_tells_a_key_used_after_the_publish_from_one_not_quiet_long_enough() -> None:
    before = check_quiet(
        since=PUBLISHED,
        last_used=LastUsed("K1", PUBLISHED - timedelta(seconds=5)),
        quiet_period=QUIET,
        poll_interval=POLL,
        deadline=DEADLINE,
        now=PUBLISHED + timedelta(seconds=5),
    )
    after = check_quiet(
        since=PUBLISHED,
        last_used=LastUsed("K1", PUBLISHED + timedelta(seconds=2)),
        quiet_period=QUIET,
        poll_interval=POLL,
        deadline=DEADLINE,
        now=PUBLISHED + timedelta(seconds=5),
    )
    assert before.outcome is after.outcome is Quiet.WAIT
    assert not before.in_use_since(PUBLISHED) and after.in_use_since(PUBLISHED)


def test_records_written_by_an_older_keyrotor_are_read_as_what_they_meant() -> None:
    old = {
        "rotation_id": "r1",
        "user_name": "alice",
        "account_id": "123",
        "phase": "published",
        "timings": {"quiet_period": 60.0, "poll_interval": 10.0, "max_wait": 600.0, "grace_period": 0.0},
        "started_at": T0.isoformat(),
        "started_by": "test",
        "paused_run_id": "run-7",
        "paused_at": T0.isoformat(),
        "pause_reason": "paused by an operator",
        "rollback": None,
        "kind": "rotation",
        "a_field_from_the_future": 1,
    }
    read = from_record(RotationState, old, 9)
    assert read.timings == TIMINGS and read.version == 9
    assert read.pause is not None and read.pause.run_id == "run-7" and read.pause.kind is PauseKind.OPERATOR
