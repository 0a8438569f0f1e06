"""Pausing a rotation: Prefect suspends the flow run (from the UI or ``keyrotor pause``); keyrotor notices and records it.

A suspended run holds no process: the flow exits, and on resume Prefect runs it again from the top, where every
step finds its work done. The pause is also recorded in the durable state (and marks the rotation's record in the
waiting index held, so the waker leaves it alone), so a paused rotation keeps blocking a second rotation of the
user even if Prefect's database is lost. These are plain functions, not tasks: Prefect runs no task inside a flow
run it has paused.
"""

from __future__ import annotations

from dataclasses import replace

from prefect.exceptions import Pause as PrefectPause
from prefect.runtime import deployment

from keyrotor.adapters.prefect_api import run_state
from keyrotor.adapters.records import hold_rotation
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.model import Pause, PauseKind, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks.context import RotationContext


def record_pause(ctx: RotationContext, state: RotationState, kind: PauseKind, reason: str) -> RotationState:
    """Write the pause into the durable state (this run is the one to resume), while holding the lease."""
    assert ctx.flow_run_id is not None
    saved = ctx.save(replace(state, pause=Pause(ctx.flow_run_id, utcnow(), kind, reason)))
    ctx.waiting.hold(ctx.account_id, ctx.user_name, held=True)
    return saved


def record_hold(ctx: RotationContext, kind: PauseKind, reason: str, run_id: str | None = None) -> RotationState | None:
    """Record a pause of ``run_id`` (default: this run) without holding the lease: after the run let go of it."""
    paused_run = run_id or ctx.flow_run_id
    assert paused_run is not None
    return hold_rotation(ctx.records, ctx.waiting, Pause(paused_run, utcnow(), kind, reason), ctx.actor)


def stop_if_suspended(ctx: RotationContext, state: RotationState) -> None:
    """If Prefect has suspended this (deployment) run, record the pause and exit the flow run without a process."""
    if deployment.id is None:
        return  # Prefect can only suspend deployment runs
    try:
        current = run_state(ctx.flow_run_id)
    except KeyrotorError:
        return  # Prefect unreachable: a missed look, tried again at the next one
    if current is not None and current.is_paused():
        recorded = ctx.records.load_state() or state
        record_pause(ctx, recorded, PauseKind.PREFECT, "suspended from Prefect")
        raise PrefectPause(state=current)
