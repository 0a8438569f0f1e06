"""What status says about a rotation, in every situation an operator meets: a table of cases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyrotor.core.errors import ConfigurationError
from keyrotor.core.inputs import check_quiet_period, check_user_name
from keyrotor.core.model import Phase, RotationState
from keyrotor.core.outlook import outlook
from tests.unit.core.test_decisions import T0, state

LATER = T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("current", "alive", "doing", "waiting_for", "command", "needs_person"),
    [
        (None, False, "no rotation recorded", "nothing", "keyrotor rotate alice", False),
        (
            state(
                phase=Phase.PUBLISHED,
                old_key_id="K1",
                paused_run_id="run-1",
                paused_at=T0,
                pause_reason="suspended from Prefect",
            ),
            False,
            "paused since 2026-01-01T00:00:00+00:00",
            "an operator to resume it",
            "keyrotor resume alice",
            True,
        ),
        (
            state(phase=Phase.PUBLISHED, paused_run_id="run-1", pause_reason="awaiting approval to deactivate"),
            False,
            "paused",
            "approval",
            "keyrotor resume alice --approve (or --reject)",
            True,
        ),
        (
            state(phase=Phase.ROLLED_BACK, old_key_id="K1", new_key_id="K2", rolled_back_at=T0),
            False,
            "rolled back at 2026-01-01T00:00:00+00:00: old key K1 is active",
            "nothing",
            "keyrotor rotate alice",
            False,
        ),
        (
            state(phase=Phase.PUBLISHED, rollback_started_at=T0),
            False,
            "rollback started",
            "no run is finishing it",
            "keyrotor rollback alice",
            True,
        ),
        (state(phase=Phase.PUBLISHED, rollback_started_at=T0), True, "rolling back", "rollback run", "", False),
        (
            state(phase=Phase.PUBLISHED, old_key_id="K1", halted="old key in use at the deadline"),
            False,
            "stopped: old key in use",
            "application still using",
            "keyrotor rotate alice",
            True,
        ),
        (
            state(phase=Phase.PUBLISHED, old_key_id="K1", published_at=T0, wait_deadline=T0 + timedelta(days=7)),
            True,
            "waiting for applications to stop using old key K1",
            "a run is polling",
            "",
            False,
        ),
        (
            state(phase=Phase.PUBLISHED, old_key_id="K1", published_at=T0),
            False,
            "was waiting",
            "nothing is checking",
            "keyrotor rotate alice",
            True,
        ),
        (
            state(
                phase=Phase.DEACTIVATED,
                old_key_id="K1",
                deactivated_at=T0,
                delete_after=T0 + timedelta(days=7),
                deletion_run_id="run-9",
            ),
            False,
            "inactive since",
            "grace period to end at 2026-01-08",
            "",
            False,
        ),
        (
            state(phase=Phase.DEACTIVATED, old_key_id="K1", delete_after=T0),
            False,
            "grace period is over",
            "deletion",
            "keyrotor finish alice",
            False,
        ),
        (state(phase=Phase.CREATED), True, "introducing the new key", "the run", "", False),
        (
            state(phase=Phase.CREATED),
            False,
            "interrupted in phase 'created'",
            "operator",
            "keyrotor rotate alice",
            True,
        ),
        (state(phase=Phase.COMPLETED, old_key_id="K1", completed_at=T0), False, "completed", "nothing", "", False),
        (state(phase=Phase.FAILED, error="boom"), False, "failed: boom", "old key was left", "keyrotor rotate", False),
        (
            state(phase=Phase.REJECTED, error="rejected by an operator: no"),
            False,
            "rejected by an operator",
            "an operator",
            "keyrotor rollback alice",
            True,
        ),
    ],
)
def test_outlook(
    current: RotationState, alive: bool, doing: str, waiting_for: str, command: str, needs_person: bool
) -> None:
    view = outlook(current, "alice", LATER, run_alive=alive)
    assert doing in view.doing
    assert waiting_for in view.waiting_for
    assert (command in view.command) if command else view.command == ""
    assert view.needs_person is needs_person


def test_a_parked_wait_says_when_the_next_check_is() -> None:
    waiting = state(phase=Phase.PUBLISHED, old_key_id="K1", published_at=T0)
    view = outlook(waiting, "alice", LATER, next_check_at=LATER + timedelta(minutes=15))
    assert "holds no process" in view.doing and "next check at 2026-01-01T01:15:00+00:00" in view.waiting_for
    assert view.command == "" and not view.needs_person


@pytest.mark.parametrize("name", ["", " ", "a" * 65, "bad/name", "tab\tname", "ünïcode"])
def test_impossible_user_names_are_bad_input(name: str) -> None:
    with pytest.raises(ConfigurationError, match="not a valid IAM user name"):
        check_user_name(name)


@pytest.mark.parametrize("name", ["alice", "svc+ci=1,a.b@c_d-e", "a" * 64, "A"])
def test_possible_user_names_pass(name: str) -> None:
    assert check_user_name(name) == name


@pytest.mark.parametrize(
    ("quiet", "real_aws", "accepted", "refused"),
    [
        (timedelta(0), False, False, "0s would deactivate"),
        (timedelta(0), True, False, "0s would deactivate"),
        (timedelta(0), False, True, None),
        (timedelta(seconds=2), False, False, None),  # a local endpoint records last use at once
        (timedelta(hours=1), True, False, "shorter than the 4h"),
        (timedelta(hours=1), True, True, None),
        (timedelta(hours=4), True, False, None),
        (timedelta(days=1), True, False, None),
    ],
)
def test_quiet_periods_that_cannot_be_safe_are_refused(
    quiet: timedelta, real_aws: bool, accepted: bool, refused: str | None
) -> None:
    if refused is None:
        check_quiet_period(quiet, real_aws=real_aws, accepted=accepted)
    else:
        with pytest.raises(ConfigurationError, match=refused) as error:
            check_quiet_period(quiet, real_aws=real_aws, accepted=accepted)
        assert "--accept-unsafe-quiet-period" in str(error.value)
