"""``keyrotor pause`` and ``keyrotor resume``: what the Prefect UI's Pause and Resume do, from a terminal."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.flow_runs import resume_flow_run

from keyrotor.connect import Connections
from keyrotor.errors import PreconditionFailed, RotationConflict
from keyrotor.model import RotationState
from keyrotor.tasks.pause import read_run, suspend_run


def _rotation(connections: Connections, user_name: str) -> RotationState:
    connections.iam.ensure_user(user_name)
    state = connections.records(user_name).load_state()
    if state is None or state.phase.terminal:
        raise PreconditionFailed(f"no rotation of {user_name!r} is in progress")
    return state


def pause_rotation(connections: Connections, user_name: str, timeout: timedelta | None, wait: float = 60) -> str:
    """Suspend the flow run carrying the user's rotation and wait until it has let go; returns its id."""
    state = _rotation(connections, user_name)
    if state.paused_run_id:
        raise PreconditionFailed(f"rotation of {user_name!r} is already paused (flow run {state.paused_run_id})")
    records = connections.records(user_name)
    lease = records.read_lease()
    live = (
        lease is not None
        and lease.data.get("owner")
        and datetime.fromisoformat(lease.data["expires_at"]) > datetime.now(UTC)
    )
    run_id = (lease.data.get("flow_run_id") if live and lease else None) or state.last_flow_run_id
    run = read_run(run_id)
    if run is None or run.deployment_id is None:
        raise PreconditionFailed(
            f"rotation of {user_name!r} runs outside a deployment (flow run {run_id}), which Prefect cannot suspend. "
            f"Stop that process (Ctrl-C); `keyrotor rotate {user_name}` continues it later."
        )
    if run.state is None or not (run.state.is_running() or run.state.is_scheduled() or run.state.is_pending()):
        raise PreconditionFailed(
            f"flow run {run.name} of {user_name!r} is {run.state.name if run.state else '?'}, not running"
        )
    suspend_run(str(run.id), timeout)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = records.load_state()
        if current is not None and current.paused_run_id == str(run.id):
            return str(run.id)
        time.sleep(0.5)
    raise RotationConflict(
        f"flow run {run.name} was suspended but has not stopped within {wait:g}s; check it in the UI"
    )


def resume_rotation(connections: Connections, user_name: str, run_input: dict[str, Any] | None = None) -> str:
    """Resume the paused flow run of the user's rotation, with the approval answer if it waits for one.

    A suspended run is rescheduled by Prefect; a run paused in its own process (started from the command line,
    waiting for approval) continues there. Returns the run's id.
    """
    state = _rotation(connections, user_name)
    lease = connections.records(user_name).read_lease()
    candidates = [state.paused_run_id, lease.data.get("flow_run_id") if lease else None, state.last_flow_run_id]
    run = next(
        (r for r in map(read_run, candidates) if r is not None and r.state is not None and r.state.is_paused()), None
    )
    if run is None:
        raise PreconditionFailed(f"rotation of {user_name!r} is not paused")
    waits_for_input = bool(run.state and run.state.state_details.run_input_keyset)
    if waits_for_input and run_input is None:
        raise PreconditionFailed(f"flow run {run.name} waits for approval: answer with --approve or --reject")
    resume_flow_run(UUID(str(run.id)), run_input=run_input if waits_for_input else None)
    return str(run.id)
