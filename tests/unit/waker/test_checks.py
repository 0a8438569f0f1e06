"""The waker's checks of parked rotations, one branch per test: not due, still in use, quiet, at the deadline,
held, paused from the UI, its run gone, cancelled, crashed or ended, IAM down, another server's run."""

from __future__ import annotations

from prefect.client.schemas.objects import StateType

from keyrotor.core.model import PauseKind, Quiet
from tests.unit.waker.conftest import ACCOUNT, World


def test_a_rotation_not_due_yet_is_not_looked_at(world: World) -> None:
    wait = world.park()
    world.tick(5)
    report = world.waker.sweep()
    assert report.checked == 0 and world.iam.looks == [] and world.runs.resumed == []
    assert report.next_due == wait.next_check_at


def test_a_key_still_in_use_gets_its_look_recorded_and_the_next_one_scheduled(world: World) -> None:
    wait = world.park()
    world.tick(11)
    world.use(wait.key_id, seconds_ago=1)  # used after the publish
    report = world.waker.sweep()
    after = world.waiting()
    assert after is not None and after.last_check is not None
    assert after.last_check.outcome is Quiet.WAIT and after.last_check.at == world.clock.now
    assert after.next_check_at == world.clock.now + after.poll_interval
    assert report.looked == ["alice"] and world.runs.resumed == []
    view = next(text for key, text in world.runs.artifacts.items() if key.startswith("rotation-"))
    assert f"next check at {after.next_check_at.isoformat(timespec='seconds')}" in view, "the artifact follows the look"


def test_a_quiet_key_wakes_its_run_once(world: World) -> None:
    wait = world.park()
    world.tick(61)  # never used: quiet for the whole quiet period since the publish
    report = world.waker.sweep()
    assert report.woken == ["alice"] and world.runs.resumed == [wait.flow_run_id]
    world.tick(1)
    assert world.waker.sweep().woken == [], "the resumed run is given time to move on; it is not resumed twice"


def test_at_the_deadline_a_key_still_in_use_wakes_the_run_to_stop(world: World) -> None:
    wait = world.park()
    world.tick(600)
    world.use(wait.key_id)
    assert world.waker.sweep().woken == ["alice"]


def test_an_operator_s_hold_is_left_alone_even_when_the_key_is_quiet(world: World) -> None:
    world.park(held=True)
    world.tick(61)
    report = world.waker.sweep()
    assert report.checked == 0 and world.runs.resumed == [] and world.iam.looks == []


def test_a_run_paused_from_the_ui_is_recorded_as_a_hold_not_resumed(world: World) -> None:
    wait = world.park()
    world.runs.move(wait.flow_run_id, StateType.PAUSED, "Suspended")
    world.tick(61)
    report = world.waker.sweep()
    assert report.held == ["alice"] and world.runs.resumed == []
    pause = world.record().pause
    assert pause is not None and pause.kind is PauseKind.PREFECT and pause.run_id == wait.flow_run_id
    assert (world.waiting() or wait).held


def test_a_run_gone_from_prefect_is_said_once_and_left(world: World) -> None:
    wait = world.park()
    del world.runs.runs[wait.flow_run_id]
    world.tick(61)
    assert world.waker.sweep().woken == []
    looks = len(world.iam.looks)
    world.tick(2)
    world.waker.sweep()
    assert len(world.iam.looks) == looks, "not looked at again every sweep"
    assert (world.waiting() or wait).held, "left to a person: `keyrotor rotate alice` continues it"


def test_a_run_cancelled_while_it_waited_is_held(world: World) -> None:
    wait = world.park()
    world.runs.move(wait.flow_run_id, StateType.CANCELLED, "Cancelled")
    world.tick(61)
    world.waker.sweep()
    pause = world.record().pause
    assert pause is not None and "cancelled" in pause.reason and world.runs.resumed == []


def test_a_run_that_crashed_after_its_resume_is_scheduled_again(world: World) -> None:
    wait = world.park()
    world.runs.move(wait.flow_run_id, StateType.CRASHED, "Crashed")
    world.tick(61)
    report = world.waker.sweep()
    assert report.recovered == ["alice"] and world.runs.rescheduled == [wait.flow_run_id]


def test_the_record_of_a_run_that_ended_is_dropped(world: World) -> None:
    wait = world.park()
    world.runs.move(wait.flow_run_id, StateType.COMPLETED, "Completed")
    world.tick(61)
    assert world.waker.sweep().dropped == ["alice"] and world.waiting() is None


def test_iam_down_is_a_missed_look_tried_again_after_a_poll_interval(world: World) -> None:
    wait = world.park()
    world.iam.iam_down = True
    world.tick(61)
    report = world.waker.sweep()
    assert report.woken == [] and report.next_due == world.clock.now + wait.poll_interval
    world.iam.iam_down = False
    world.tick(1)
    assert world.waker.sweep().woken == [], "not before the poll interval"
    world.tick(10)
    assert world.waker.sweep().woken == ["alice"]


def test_a_run_on_another_prefect_server_is_that_server_s_wakers_business(world: World) -> None:
    world.park(prefect_api="http://staging.test/api")
    world.tick(61)
    assert world.waker.sweep().checked == 0 and world.runs.resumed == []


def test_a_resumed_run_that_parks_again_is_checked_again(world: World) -> None:
    wait = world.park()
    world.tick(61)
    world.waker.sweep()
    world.runs.move(wait.flow_run_id, StateType.PAUSED, "Waiting")  # it looked once more, and parked again
    from dataclasses import replace

    world.connections.waiting.write(
        replace(world.waiting() or wait, wait_id="wait-2", next_check_at=world.clock.now + wait.poll_interval)
    )
    world.use(wait.key_id)
    world.tick(11)
    assert world.waker.sweep().looked == ["alice"]
    assert ACCOUNT in (world.waiting() or wait).account_id
