"""The waker's recovery, one branch per test: a UI pause (its timeout taken off), an expired pause (suspended
again), a dead run (scheduled again once its lease says so, at most three times), the fleet's artifact, and the
waker lease (a lost waker replaced within its TTL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from prefect.client.schemas.objects import StateType

from keyrotor.adapters.lease import Holder, Lease
from keyrotor.adapters.prefect_runs import EXPIRED_PAUSE
from keyrotor.adapters.records import LeaseRecord
from keyrotor.core.model import LeaseData, PauseKind, Phase
from keyrotor.waker.recovery import MAX_REVIVALS, SETTLING
from keyrotor.waker.service import FLEET_ARTIFACT, FLEET_INTERVAL, waker_lease
from tests.unit.factories import state
from tests.unit.waker.conftest import ACCOUNT, World


def running(world: World, run_id: str = "run-2", user: str = "bob") -> None:
    """``user``'s rotation, worked on by ``run_id`` (Running in Prefect)."""
    world.iam.add_user(user)
    record = state(user_name=user, account_id=ACCOUNT, phase=Phase.CREATED, last_flow_run_id=run_id)
    world.connections.records(user).save_state(record, "test")
    world.runs.add(run_id, StateType.RUNNING, user_name=user, account_id=ACCOUNT)


def hold_lease(world: World, user: str, run_id: str, expires_in: float) -> None:
    lease = LeaseData(owner="someone", flow_run_id=run_id, expires_at=world.clock.now + timedelta(seconds=expires_in))
    world.connections.records(user).lease.write_lease(lease, cas=0)


def test_a_ui_pause_never_expires_and_is_recorded(world: World) -> None:
    running(world)
    world.runs.suspend("run-2", timedelta(seconds=300))  # what the UI's Pause sends
    report = world.waker.sweep()
    assert world.runs.runs["run-2"].pause_timeout is None and report.held == ["bob"]
    pause = world.record("bob").pause
    assert pause is not None and pause.kind is PauseKind.PREFECT


def test_a_pause_prefect_already_failed_is_suspended_again(world: World) -> None:
    running(world)
    world.runs.move("run-2", StateType.FAILED, "Failed", message=EXPIRED_PAUSE)
    world.waker.sweep()
    assert world.runs.runs["run-2"].state is StateType.PAUSED and world.runs.runs["run-2"].pause_timeout is None
    assert world.record("bob").pause is not None


def test_an_expired_pause_of_an_ended_rotation_is_left_alone(world: World) -> None:
    running(world)
    world.connections.records("bob").save_state(replace(world.record("bob"), phase=Phase.COMPLETED), "test")
    world.runs.move("run-2", StateType.FAILED, "Failed", message=EXPIRED_PAUSE)
    world.waker.sweep()
    assert world.runs.runs["run-2"].state is StateType.FAILED


def test_a_run_whose_lease_expired_is_scheduled_again(world: World) -> None:
    running(world)
    hold_lease(world, "bob", "run-2", expires_in=60)
    world.tick(30)
    assert world.waker.sweep().recovered == [], "its lease is still renewed: it lives"
    world.tick(31)  # past its expiry, and past the next recovery look
    assert world.waker.sweep().recovered == ["bob"] and world.runs.rescheduled == ["run-2"]


def test_a_run_that_never_took_the_lease_is_given_time_to_start(world: World) -> None:
    running(world)
    world.tick(SETTLING.total_seconds() - 1)
    assert world.waker.sweep().recovered == []
    world.tick(world.waker.recovery_interval.total_seconds())
    assert world.waker.sweep().recovered == ["bob"]


def test_a_leftover_run_while_another_run_holds_the_lease_is_left_alone(world: World) -> None:
    running(world)
    hold_lease(world, "bob", "run-other", expires_in=600)
    world.tick(120)
    assert world.waker.sweep().recovered == []


def test_a_run_that_keeps_dying_is_left_for_a_person(world: World) -> None:
    running(world)
    revived = 0
    for _ in range(MAX_REVIVALS + 2):
        world.tick(SETTLING.total_seconds() + 1)
        world.runs.move("run-2", StateType.RUNNING, "Running")  # started again, and died again
        world.tick(SETTLING.total_seconds() + 1)
        revived += len(world.waker.sweep().recovered)
    assert revived == MAX_REVIVALS


def test_the_fleet_artifact_is_published_when_the_fleet_changes(world: World) -> None:
    world.park()
    world.waker.sweep()
    first = world.runs.artifacts[FLEET_ARTIFACT]
    assert "alice" in first and "waiting" in first
    world.runs.artifacts.clear()
    world.tick(FLEET_INTERVAL.total_seconds())
    world.waker.sweep()
    assert FLEET_ARTIFACT not in world.runs.artifacts, "nothing changed: not published again"


def test_a_lost_waker_is_replaced_within_its_lease_ttl(world: World) -> None:
    first = waker_lease(world.connections, world.runs.server, clock=world.clock)
    second = waker_lease(world.connections, world.runs.server, clock=world.clock)
    assert first.try_acquire() and not second.try_acquire()
    ttl = world.connections.settings.waker_lease_ttl
    assert ttl <= timedelta(seconds=30), "a lost waker is replaced within 30 s"
    world.tick(ttl.total_seconds() - 1)
    assert not second.try_acquire()
    world.tick(2)  # the first one died: it stopped renewing
    assert second.try_acquire() and first.lost


def test_a_waker_on_this_machine_whose_process_is_gone_is_replaced_at_once(world: World) -> None:
    store = LeaseRecord(world.kv, "keyrotor-waker/lease")
    gone = Lease(
        store,
        holder=Holder("dead waker", Holder.this_process("x").host, 2**22 + 7),
        ttl=timedelta(seconds=15),
        clock=world.clock,
    )
    assert gone.try_acquire()
    successor = Lease(store, holder=Holder.this_process("next waker"), ttl=timedelta(seconds=15), clock=world.clock)
    assert successor.try_acquire(), "its holder's pid does not exist on this host: no need to wait for the TTL"
