"""Pausing a rotation: Prefect suspends the flow run (from the UI or ``keyrotor pause``); keyrotor notices and records it.

A suspended run holds no process: the flow exits, and on resume Prefect runs it again from the top, where every
step finds its work done. The pause is also recorded in the durable state, so a paused rotation keeps blocking a
second rotation of the user even if Prefect's database is lost. These are plain functions, not tasks: Prefect
runs no task inside a flow run it has paused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateDetails, StateType
from prefect.exceptions import ObjectNotFound, Pause
from prefect.runtime import deployment
from prefect.states import State

from keyrotor.context import RotationContext
from keyrotor.model import RotationState, utcnow


def read_run(run_id: str | None) -> FlowRun | None:
    """A flow run from Prefect's API, or None when there is no such run."""
    if not run_id:
        return None
    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return None


def prefect_state(run_id: str | None) -> State | None:
    """The current Prefect state of a flow run, or None when there is no such run."""
    run = read_run(run_id)
    return run.state if run else None


def suspend_run(run_id: str, timeout: timedelta | None = None) -> State:
    """Suspend a flow run exactly as the Prefect UI's "Pause" does: state Suspended, rescheduled on resume."""
    details = StateDetails(
        pause_reschedule=True,
        pause_timeout=datetime.now(UTC) + timeout if timeout else None,
    )
    with get_client(sync_client=True) as client:
        result = client.set_flow_run_state(
            UUID(run_id), State(type=StateType.PAUSED, name="Suspended", state_details=details), force=False
        )
    return result.state if result.state is not None else State(type=StateType.PAUSED, name="Suspended")


def record_pause(ctx: RotationContext, state: RotationState, reason: str) -> RotationState:
    """Write the pause into the durable state (this run is the one to resume)."""
    return ctx.save(state.evolve(paused_run_id=ctx.flow_run_id, paused_at=utcnow(), pause_reason=reason))


def stop_if_suspended(ctx: RotationContext, state: RotationState) -> None:
    """If Prefect has suspended this (deployment) run, record the pause and exit the flow run without a process."""
    if deployment.id is None:
        return  # Prefect can only suspend deployment runs
    current = prefect_state(ctx.flow_run_id)
    if current is not None and current.is_paused():
        record_pause(ctx, ctx.records.load_state() or state, "suspended from Prefect")
        raise Pause(state=current)
