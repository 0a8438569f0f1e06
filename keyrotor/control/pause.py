"""``keyrotor pause`` and ``keyrotor resume``: what the Prefect UI's Pause and Resume do, from a terminal, in every phase.

A rotation is carried by a flow run of a deployment. Pausing it while it works asks Prefect to suspend the run, as
the UI does, and waits until the run has recorded the pause and let go. Pausing it while it is parked (waiting for
its old key to go quiet, its run suspended as "Waiting") records an operator's hold in Vault, which the waker
respects, and shows the run as Suspended in the UI. Either way no process is held, and the pause never expires.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType

from keyrotor.adapters.connections import Connections, whoami
from keyrotor.adapters.prefect_api import WAITING, force_state, prefect_call, read_run, resume_run, suspend_run
from keyrotor.adapters.records import hold_rotation
from keyrotor.core.errors import PreconditionFailed, RotationConflict
from keyrotor.core.model import RotationState
from keyrotor.core.outlook import outlook
from keyrotor.core.timestamps import utcnow

EXPIRED_PAUSE = "The flow was paused and never resumed"


def _rotation(connections: Connections, user_name: str) -> RotationState:
    connections.iam.ensure_user(user_name)
    state = connections.records(user_name).load_state()
    if state is None or state.phase.terminal:
        raise PreconditionFailed(f"no rotation of {user_name!r} is in progress")
    return state


def _carrying_run(connections: Connections, user_name: str, state: RotationState) -> str | None:
    """The flow run carrying the rotation now: the live lease's, the parked run, or the last one."""
    lease = connections.records(user_name).read_lease()
    live = (
        lease is not None
        and lease.data.get("owner")
        and datetime.fromisoformat(lease.data["expires_at"]) > datetime.now(UTC)
    )
    parked = connections.waiting.read(connections.account_id, user_name)
    return (
        (lease.data.get("flow_run_id") if live and lease else None)
        or (parked.flow_run_id if parked else None)
        or state.last_flow_run_id
    )


def _suspended() -> State:
    details = StateDetails(pause_reschedule=True, pause_timeout=None)
    return State(type=StateType.PAUSED, name="Suspended", state_details=details)


def pause_rotation(connections: Connections, user_name: str, wait: float = 60) -> str:
    """Pause the user's rotation in any phase until someone resumes it; returns the id of its flow run."""
    state = _rotation(connections, user_name)
    if state.paused_run_id:
        raise PreconditionFailed(f"rotation of {user_name!r} is already paused (flow run {state.paused_run_id})")
    run_id = _carrying_run(connections, user_name, state)
    run = read_run(run_id)
    if run is None or run.deployment_id is None or run.state is None:
        raise PreconditionFailed(
            f"rotation of {user_name!r} runs outside a deployment (flow run {run_id}), which Prefect cannot suspend. "
            f"Stop that process (Ctrl-C); `keyrotor rotate {user_name}` continues it later."
        )
    if run.state.is_running():
        suspend_run(str(run.id))  # what the UI's Pause does, without its timeout; the run records the pause
        return _until_recorded(connections, user_name, run, wait)
    if run.state.is_paused() or run.state.is_scheduled() or run.state.is_pending():
        records, account = connections.records(user_name), connections.account_id
        reason = "paused by an operator" + (" while waiting" if run.state.name == WAITING else "")
        hold_rotation(records, connections.waiting, account, user_name, str(run.id), reason, f"{whoami()}, pause")
        force_state(str(run.id), _suspended())
        return str(run.id)
    raise PreconditionFailed(f"flow run {run.name} of {user_name!r} is {run.state.name}: nothing to pause")


def _until_recorded(connections: Connections, user_name: str, run: FlowRun, wait: float) -> str:
    records = connections.records(user_name)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = records.load_state()
        if current is not None and (current.paused_run_id == str(run.id) or current.phase.terminal):
            return str(run.id)
        time.sleep(0.5)
    raise RotationConflict(
        f"flow run {run.name} was suspended but has not stopped within {wait:g}s; check it in the UI"
    )


def resume_rotation(connections: Connections, user_name: str, run_input: dict[str, Any] | None = None) -> str:
    """Resume the user's paused rotation, with the approval answer if it waits for one; returns its run's id.

    A suspended run is rescheduled by Prefect and goes on from where it stopped; a run paused in its own process
    (started from a terminal, waiting for approval) continues there. A pause that Prefect let expire into Failed
    (the UI's timeout, while no waker ran) is revived first.
    """
    state = _rotation(connections, user_name)
    parked = connections.waiting.read(connections.account_id, user_name)
    lease = connections.records(user_name).read_lease()
    candidates = [
        state.paused_run_id,
        parked.flow_run_id if parked else None,
        lease.data.get("flow_run_id") if lease else None,
        state.last_flow_run_id,
    ]
    for run_id in dict.fromkeys(candidate for candidate in candidates if candidate):
        run = read_run(run_id)
        if run is None:
            continue
        if run.state is not None and run.state.is_failed() and EXPIRED_PAUSE in (run.state.message or ""):
            force_state(str(run.id), _suspended())
            run = read_run(str(run.id)) or run
        if run.state is None or not run.state.is_paused():
            continue
        if run.state.name == WAITING and not state.paused_run_id:
            view = outlook(state, user_name, utcnow(), next_check_at=parked.next_check_at if parked else None)
            raise PreconditionFailed(f"rotation of {user_name!r} is not paused: {view.doing}; {view.waiting_for}")
        waits_for_input = bool(run.state.state_details.run_input_keyset)
        if waits_for_input and run_input is None:
            raise PreconditionFailed(f"flow run {run.name} waits for approval: answer with --approve or --reject")
        if waits_for_input:
            from prefect.flow_runs import resume_flow_run

            with prefect_call(f"resume flow run {run.name}"):
                resume_flow_run(run.id, run_input=run_input)
        else:
            resume_run(str(run.id))
        return str(run.id)
    raise PreconditionFailed(f"rotation of {user_name!r} is not paused")
