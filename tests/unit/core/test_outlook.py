"""What status says about a rotation, in every situation an operator meets: a table of cases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyrotor.core.model import Answer, Approval, Pause, PauseKind, Phase, Rollback, RotationState
from keyrotor.core.outlook import outlook, rotation_markdown
from tests.unit.factories import T0, parked, state

LATER = T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("current", "alive", "doing", "waiting_for", "command", "needs_person"),
    [
        (None, False, "no rotation recorded", "nothing", "keyrotor rotate alice", False),
        (
            state(
                phase=Phase.PUBLISHED,
                old_key_id="K1",
                pause=Pause("run-1", T0, PauseKind.PREFECT, "suspended from Prefect"),
            ),
            False,
            "paused from the Prefect UI since 2026-01-01T00:00:00+00:00",
            "an operator to resume it",
            "keyrotor resume alice",
            True,
        ),
        (
            state(
                phase=Phase.PUBLISHED, pause=Pause("run-1", T0, PauseKind.APPROVAL, "awaiting approval to deactivate")
            ),
            False,
            "paused",
            "approval",
            "keyrotor resume alice --approve (or --reject)",
            True,
        ),
        (
            state(
                phase=Phase.ROLLED_BACK,
                old_key_id="K1",
                new_key_id="K2",
                rollback=Rollback(
                    T0, Phase.PUBLISHED, restored_at=T0, new_key_deactivated_at=LATER, delete_after=LATER
                ),
            ),
            False,
            "rolled back at 2026-01-01T00:00:00+00:00: old key K1 is active and in Vault again; new key K2 inactive",
            "nothing",
            "keyrotor rotate alice",
            False,
        ),
        (
            state(phase=Phase.ROLLING_BACK, rollback=Rollback(T0, Phase.PUBLISHED)),
            False,
            "rollback started",
            "no run is finishing it",
            "keyrotor rollback alice",
            True,
        ),
        (
            state(phase=Phase.ROLLING_BACK, rollback=Rollback(T0, Phase.PUBLISHED)),
            True,
            "rolling back",
            "rollback run",
            "",
            False,
        ),
        (
            state(
                phase=Phase.ROLLING_BACK,
                old_key_id="K1",
                new_key_id="K2",
                rollback=Rollback(T0, Phase.PUBLISHED, restored_at=T0, wait_deadline=LATER),
            ),
            True,
            "rolled back to the old key K1 (active and in Vault since 2026-01-01T00:00:00+00:00); waiting for "
            "applications to stop using the new key K2",
            "a run is polling the new key",
            "",
            False,
        ),
        (
            state(
                phase=Phase.ROLLING_BACK,
                new_key_id="K2",
                halted="new key K2 was still in use",
                rollback=Rollback(T0, Phase.PUBLISHED, restored_at=T0),
            ),
            False,
            "stopped: new key K2 was still in use",
            "application still using the new key",
            "keyrotor rollback alice --now",
            True,
        ),
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
            "inactive since",
            "no run scheduled",
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
    view = outlook(current, "alice", run_alive=alive)
    assert doing in view.doing
    assert waiting_for in view.waiting_for
    assert (command in view.command) if command else view.command == ""
    assert view.needs_person is needs_person


def test_a_parked_wait_says_when_the_next_check_is() -> None:
    waiting = state(phase=Phase.PUBLISHED, old_key_id="K1", published_at=T0)
    view = outlook(waiting, "alice", wait=parked(next_check_at=LATER + timedelta(minutes=15)))
    assert "holds no process" in view.doing and "next check at 2026-01-01T01:15:00+00:00" in view.waiting_for
    assert view.command == "" and not view.needs_person and view.status == "waiting"


def test_the_waiting_record_of_another_rotation_is_not_this_one_s() -> None:
    waiting = state(phase=Phase.PUBLISHED, old_key_id="K1", published_at=T0)
    view = outlook(waiting, "alice", wait=parked(rotation_id="an-older-one"))
    assert "nothing is checking the old key" in view.waiting_for and view.needs_person


@pytest.mark.parametrize(
    ("current", "status"),
    [
        (
            state(phase=Phase.PUBLISHED, pause=Pause("r", T0, PauseKind.APPROVAL, "awaiting approval")),
            "awaiting approval",
        ),
        (state(phase=Phase.PUBLISHED, pause=Pause("r", T0, PauseKind.OPERATOR, "held")), "paused"),
        (state(phase=Phase.PUBLISHED, halted="in use"), "stopped at deadline"),
        (state(phase=Phase.ROLLING_BACK, rollback=Rollback(T0, Phase.PUBLISHED)), "rolling back"),
        (state(phase=Phase.ROLLED_BACK), "rolled back"),
        (state(phase=Phase.DEACTIVATED), "grace period"),
        (state(phase=Phase.PUBLISHED), "waiting (in a process)"),
    ],
)
def test_the_status_counts_what_the_rotation_does(current: RotationState, status: str) -> None:
    assert outlook(current, "alice").status == status


def test_the_artifact_keeps_the_approval_answer_and_the_last_look() -> None:
    answered = state(
        phase=Phase.REJECTED,
        old_key_id="K1",
        new_key_id="K2",
        completed_at=LATER,
        error="rejected by bob: billing still uses it",
        approval=Approval(Answer.REJECT, "billing still uses it", "bob", LATER),
    )
    text = rotation_markdown(answered, outlook(answered, "alice"), parked())
    assert "**approval**: rejected by bob at 2026-01-01T01:00:00+00:00 (billing still uses it)" in text
    assert "| 2026-01-01T01:00:00+00:00 | rejected by bob |" in text
    assert "**last look**: 2026-01-01T00:00:00+00:00: K1 never used -> wait" in text
    assert "1m" in text and "0:01:00" not in text, "durations as people write them"
