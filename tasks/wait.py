"""Waiting for the old key to go quiet, without holding a process.

A run from a deployment looks at the old key once. If applications still use it, the run *parks*: it writes when
the next look is due into Vault's waiting index, lets go of the lease, and suspends itself in Prefect (state
"Waiting", no timeout), so its process exits. The waker (:mod:`keyrotor.tasks.wake`) looks at every parked
rotation's old key when its check is due, and resumes the run only once it can move on (quiet, or at the deadline);
the resumed run starts again from the top, finds every step done, looks once more and goes on.

A run that Prefect cannot suspend (started in process by ``keyrotor rotate`` without a served deployment) waits
in its process as before, polling.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from prefect import get_run_logger
from prefect.runtime import deployment

from keyrotor.adapters.prefect_api import suspend_current_run, this_server
from keyrotor.core.decisions import Quiet
from keyrotor.core.durations import format_duration
from keyrotor.core.errors import AwsUnavailable, VaultUnavailable
from keyrotor.core.model import LastUsed, Phase, RotationState, Wait
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.keys import OldKeyCheck, check_old_key, stop_waiting
from keyrotor.tasks.pause import stop_if_suspended

PAUSE_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class Waited:
    """How the wait ended for this run: the key is quiet (with the evidence), nothing to wait for, or parked."""

    state: RotationState
    evidence: LastUsed | None = None
    parked: Wait | None = None


def wait_until_old_key_is_quiet(ctx: RotationContext, state: RotationState, continued: bool = True) -> Waited:
    """Look at the old key until it has been quiet for the quiet period; park instead of polling when the run can
    be suspended. At the deadline, with the key still in use, stop (StillInUse) with both keys active.

    ``continued``: the rotation was recorded before this run (it may have parked, and left a waiting record to drop
    once it moves on); a rotation this run started has none, which saves a Vault call per rotation.
    """
    clear = clear_wait if continued else _nothing
    if state.phase is not Phase.PUBLISHED or state.old_key_id is None:
        clear(ctx)
        return Waited(state)
    while True:
        try:
            check = check_old_key(ctx, state)
        except (AwsUnavailable, VaultUnavailable) as error:  # a missed look, not a failure, until the deadline
            if state.wait_deadline is not None and utcnow() >= state.wait_deadline:
                raise
            poll = state.timing("poll_interval")
            get_run_logger().warning("Missed a look at the old key (%s); looking again in %s", error, poll)
            _sleep_watching_for_pause(ctx, state, utcnow() + poll)
            continue
        if check.decision.outcome is Quiet.QUIET:
            clear(ctx)
            return Waited(state, evidence=check.last_used)
        if check.decision.outcome is Quiet.DEADLINE:
            clear(ctx)
            stop_waiting(ctx, state, check)  # type: ignore[unused-coroutine]  # Prefect reads a NoReturn task as async
        if can_park(ctx):
            return Waited(state, parked=park(ctx, state, check))
        assert check.decision.next_check_at is not None
        _sleep_watching_for_pause(ctx, state, check.decision.next_check_at)


def _sleep_watching_for_pause(ctx: RotationContext, state: RotationState, until: datetime) -> None:
    while (remaining := (until - utcnow()).total_seconds()) > 0:
        time.sleep(min(remaining, PAUSE_CHECK_SECONDS))
        stop_if_suspended(ctx, state)


def can_park(ctx: RotationContext) -> bool:
    """Only a flow run of a deployment (not a subflow) can be suspended and started again by Prefect."""
    return ctx.settings.park_waits and ctx.flow_run_id is not None and deployment.id is not None


def park(ctx: RotationContext, state: RotationState, check: OldKeyCheck) -> Wait:
    """Record in Vault's waiting index when the old key is to be looked at next (the run still holds the lease)."""
    assert state.old_key_id and state.published_at and state.wait_deadline and ctx.flow_run_id
    assert check.decision.next_check_at is not None
    now = utcnow()
    wait = Wait(
        rotation_id=state.rotation_id,
        user_name=ctx.user_name,
        account_id=ctx.account_id,
        flow_run_id=ctx.flow_run_id,
        wait_id=f"wait-{uuid.uuid4().hex[:12]}",
        old_key_id=state.old_key_id,
        published_at=state.published_at,
        quiet_period=state.timing("quiet_period").total_seconds(),
        poll_interval=state.timing("poll_interval").total_seconds(),
        wait_deadline=state.wait_deadline,
        next_check_at=check.decision.next_check_at,
        parked_at=now,
        last_check=evidence(check, now),
        prefect_api=this_server(),
    )
    index = ctx.waiting
    current = index.read(ctx.account_id, ctx.user_name)
    parked = index.write(wait.evolve(version=current.version if current else 0))
    get_run_logger().info(
        "Old key still in use; parking until the next check at %s (every %s; gives up at %s)",
        parked.next_check_at.isoformat(timespec="seconds"),
        format_duration(state.timing("poll_interval")),
        state.wait_deadline.isoformat(timespec="seconds"),
    )
    return parked


def suspend_until_woken(ctx: RotationContext, wait: Wait) -> NoReturn:
    """Suspend this run (no timeout) so its process exits; the waker resumes it. Raises Prefect's ``Pause``.

    Call it after the lease is released. If an operator paused the run meanwhile (the UI's Pause), Prefect refuses
    the suspension with the operator's pause, which is recorded as a hold before ``Pause`` propagates.
    """
    from prefect.exceptions import Pause

    from keyrotor.tasks.pause import record_hold

    assert ctx.flow_run_id is not None
    try:
        suspended = suspend_current_run(ctx.flow_run_id, wait.wait_id)
    except Pause:
        record_hold(ctx, "suspended from Prefect")
        raise
    raise Pause(state=suspended)


def _nothing(ctx: RotationContext) -> None:
    return None


def clear_wait(ctx: RotationContext) -> None:
    """The rotation stopped waiting (moved on, ended, or never waited): drop its record from the waiting index."""
    ctx.waiting.remove(ctx.account_id, ctx.user_name)


def evidence(check: OldKeyCheck, at: datetime) -> dict[str, object]:
    """One look at the old key, as the waiting index keeps it (shown by ``keyrotor status``)."""
    return {"at": at.isoformat(), "last_used": check.last_used.to_record(), "outcome": check.decision.outcome.value}
