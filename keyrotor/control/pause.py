"""``keyrotor pause`` and ``keyrotor resume``: what the Prefect UI's Pause and Resume do, from a terminal, in every phase.

A rotation is carried by a flow run of a deployment. Pausing it while it works asks Prefect to suspend the run, as
the UI does, and waits until the run has recorded the pause and let go. Pausing it while it is parked (waiting for
its key to go quiet, its run suspended as "Waiting") records an operator's hold in Vault, which the waker respects,
and shows the run as Suspended in the UI. Either way no process is held, and the pause never expires. Every change
is published at once as the rotation's view (:mod:`keyrotor.control.view`).
"""

from __future__ import annotations

import time
from typing import Any

from keyrotor.adapters.connections import Connections, whoami
from keyrotor.adapters.prefect_runs import RunControl, RunView
from keyrotor.adapters.records import hold_rotation
from keyrotor.control.view import publish_view, read_view
from keyrotor.core.errors import PreconditionFailed, RotationConflict
from keyrotor.core.model import Pause, PauseKind, RotationState
from keyrotor.core.outlook import outlook
from keyrotor.core.timestamps import utcnow


def _rotation(connections: Connections, user_name: str) -> RotationState:
    connections.iam.ensure_user(user_name)
    state = connections.records(user_name).load_state()
    if state is None or state.phase.terminal:
        raise PreconditionFailed(f"no rotation of {user_name!r} is in progress")
    return state


def _carrying_run(connections: Connections, user_name: str, state: RotationState) -> str | None:
    """The flow run carrying the rotation now: the live lease's, the parked run, or the last one."""
    stored = connections.records(user_name).lease.read_lease()
    lease = stored.data if stored else None
    live = lease is not None and lease.owner and lease.expires_at is not None and lease.expires_at > utcnow()
    parked = connections.waiting.read(connections.account_id, user_name)
    return (
        (lease.flow_run_id if live and lease else None)
        or (parked.flow_run_id if parked else None)
        or state.last_flow_run_id
    )


def show(connections: Connections, runs: RunControl, user_name: str) -> None:
    """Publish the user's view after a change made here."""
    records, account = connections.records(user_name), connections.account_id
    publish_view(runs, read_view(records, connections.waiting, account, user_name, utcnow()))


def pause_rotation(connections: Connections, runs: RunControl, user_name: str, wait: float = 60) -> str:
    """Pause the user's rotation in any phase until someone resumes it; returns the id of its flow run."""
    state = _rotation(connections, user_name)
    if state.pause is not None:
        raise PreconditionFailed(f"rotation of {user_name!r} is already paused (flow run {state.pause.run_id})")
    run_id = _carrying_run(connections, user_name, state)
    run = runs.read(run_id) if run_id else None
    if run is None or run.deployment_id is None:
        raise PreconditionFailed(
            f"rotation of {user_name!r} runs outside a deployment (flow run {run_id}), which Prefect cannot suspend. "
            f"Stop that process (Ctrl-C); `keyrotor rotate {user_name}` continues it later."
        )
    if run.state.value == "RUNNING":
        runs.suspend(run.id)  # what the UI's Pause does, without its timeout; the run records the pause
        return _until_recorded(connections, runs, user_name, run, wait)
    if run.state.value in ("PAUSED", "SCHEDULED", "PENDING"):
        reason = "paused by an operator" + (" while waiting" if run.parked else "")
        pause = Pause(run.id, utcnow(), PauseKind.OPERATOR, reason)
        hold_rotation(connections.records(user_name), connections.waiting, pause, f"{whoami()}, pause")
        runs.suspend(run.id, force=True)
        show(connections, runs, user_name)
        return run.id
    raise PreconditionFailed(f"flow run {run.name} of {user_name!r} is {run.state_name}: nothing to pause")


def _until_recorded(connections: Connections, runs: RunControl, user_name: str, run: RunView, wait: float) -> str:
    """Wait until the suspended run has recorded its pause (it does at its next step) and let go of the lease."""
    records = connections.records(user_name)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = records.load_state()
        if current is not None and ((current.pause and current.pause.run_id == run.id) or current.phase.terminal):
            show(connections, runs, user_name)
            return run.id
        time.sleep(0.5)
    raise RotationConflict(
        f"flow run {run.name} was suspended but has not stopped within {wait:g}s; check it in the UI"
    )


def resume_rotation(
    connections: Connections, runs: RunControl, user_name: str, run_input: dict[str, Any] | None = None
) -> str:
    """Resume the user's paused rotation, with the approval answer if it waits for one; returns its run's id.

    A suspended run is rescheduled by Prefect and goes on from where it stopped; a run paused in its own process
    (started from a terminal, waiting for approval) continues there. A pause that Prefect let expire into Failed
    (the UI's timeout, while no waker ran) is revived first.
    """
    state = _rotation(connections, user_name)
    parked = connections.waiting.read(connections.account_id, user_name)
    stored = connections.records(user_name).lease.read_lease()
    candidates = [
        state.pause.run_id if state.pause else None,
        parked.flow_run_id if parked else None,
        stored.data.flow_run_id if stored else None,
        state.last_flow_run_id,
    ]
    for run_id in dict.fromkeys(candidate for candidate in candidates if candidate):
        run = runs.read(run_id)
        if run is None:
            continue
        if run.expired_pause:
            runs.suspend(run.id, force=True)
            run = runs.read(run.id) or run
        if run.state.value != "PAUSED":
            continue
        if run.parked and state.pause is None:
            view = outlook(state, user_name, wait=parked)
            raise PreconditionFailed(f"rotation of {user_name!r} is not paused: {view.doing}; {view.waiting_for}")
        if run.waits_for_input and run_input is None:
            raise PreconditionFailed(f"flow run {run.name} waits for approval: answer with --approve or --reject")
        runs.resume(run.id, run_input if run.waits_for_input else None)
        return run.id
    raise PreconditionFailed(f"rotation of {user_name!r} is not paused")
