"""Before anything changes: connect, check Vault and the user, then start a rotation or pick up the one in progress."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from prefect import get_run_logger
from prefect.runtime import flow_run

from keyrotor.adapters.connections import Connections, whoami
from keyrotor.adapters.prefect_api import WAITING, run_state
from keyrotor.core.decisions import old_key_of, within_cooldown
from keyrotor.core.durations import format_duration
from keyrotor.core.errors import PreconditionFailed, RotationConflict
from keyrotor.core.inputs import RotationRequest, UserRequest
from keyrotor.core.model import AccessKey, Phase, RotationState
from keyrotor.core.timestamps import as_utc, utcnow
from keyrotor.core.timings import Timings
from keyrotor.settings import Settings
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext

#: How long the first look at Vault retries before a run gives up, changing nothing (an operator is waiting).
FIRST_CONTACT = timedelta(seconds=5)
#: The IAM user tag that keeps keyrotor away from a user (a break-glass account, say), unless forced.
EXEMPT_TAG = "keyrotor:exempt"


def preflight(request: UserRequest, settings: Settings, purpose: str = "rotate") -> RotationContext:
    """Connect to AWS (in the request's account: the caller's own when empty) and Vault and check, read-only, that
    the rotation can run at all.

    A plain function, not a task: it changes nothing, and its failure is the flow run's failure, message and all.

    Fails before any change when Vault is unreachable, the token is refused, the mount is missing or not
    KV v2, AWS credentials are wrong, the role in the member account cannot be assumed, or the user does not exist.
    """
    user = request.user_name
    connections = Connections.from_settings(settings).for_account(request.account, f"{purpose}-{user}")
    connections.kv.check(retry_for=min(settings.vault_retry_timeout, FIRST_CONTACT))
    connections.iam.ensure_user(user)
    run_id = flow_run.get_id()
    actor = f"{whoami()}, flow run {flow_run.get_name() or '-'} ({run_id or 'none'})"
    return RotationContext(
        user_name=user,
        account_id=connections.account_id,
        iam=connections.iam,
        records=connections.records(user),
        waiting=connections.waiting,
        settings=settings,
        actor=actor,
        flow_run_id=run_id,
        trail=connections.trail,
    )


def refuse_exempt(ctx: RotationContext, force: bool) -> None:
    """Refuse (PreconditionFailed, nothing changed) to act on a user tagged ``keyrotor:exempt`` unless forced:
    the remediation leaves such users alone, and a break-glass user is exactly what the tag protects."""
    value = ctx.iam.user_tags(ctx.user_name).get(EXEMPT_TAG)
    if value is None or value.lower() in ("false", "no", "0"):
        return
    if force:
        get_run_logger().warning("%r is tagged %s=%s; rotating it because forced", ctx.user_name, EXEMPT_TAG, value)
        return
    raise PreconditionFailed(
        f"IAM user {ctx.user_name!r} is tagged {EXEMPT_TAG}={value}: keyrotor leaves it alone. Remove the tag, or "
        "force it (--force, or force in the form) if you really mean to rotate it"
    )


@step("start-rotation")
def start_rotation(ctx: RotationContext, request: RotationRequest) -> RotationState:
    """Continue the rotation in progress, or record a new one after choosing the key to retire.

    See :func:`continue_recorded` for carrying on. A new rotation is refused (nothing changed) when the user has
    two active keys, or (unless forced) when keyrotor's last rotation of the user was due within the cooldown.
    """
    logger = get_run_logger()
    previous = ctx.records.load_state()
    now = utcnow()
    recorded = continue_recorded(ctx, previous, request.timings)
    if recorded is not None:
        return recorded

    keys = ctx.iam.list_keys(ctx.user_name)
    requested_at = requested_time(now)
    refuse_exempt(ctx, request.force)
    if not request.force:
        refuse_if_just_rotated(ctx, previous, keys, requested_at)
    old_key = old_key_of(ctx.user_name, keys)
    state = RotationState(
        rotation_id=uuid.uuid4().hex[:12],
        user_name=ctx.user_name,
        account_id=ctx.account_id,
        phase=Phase.STARTED,
        timings=request.timings,
        started_at=now,
        started_by=ctx.actor,
        requested_at=requested_at,
        old_key_id=old_key.key_id if old_key else None,
        keys_before=tuple(key.key_id for key in keys),
        flow_run_id=ctx.flow_run_id,
        version=previous.version if previous else 0,
    )
    state = ctx.save(state)
    logger.info(
        "Started rotation %s of %r: old key %s, keys now %s",
        state.rotation_id,
        ctx.user_name,
        state.old_key_id or "(none)",
        ", ".join(state.keys_before) or "(none)",
    )
    return state


def requested_time(now: datetime) -> datetime:
    """When this run was due: its scheduled start (a schedule's time, or when it was asked for), never later than
    now. The cooldown counts between these, so a schedule's own start-up delays never make it refuse."""
    scheduled = flow_run.get_scheduled_start_time() if flow_run.get_id() else None
    return min(as_utc(scheduled), now) if scheduled is not None else now


def continue_recorded(ctx: RotationContext, previous: RotationState | None, timings: Timings) -> RotationState | None:
    """The recorded rotation this run must carry on (or has ended), or None when a new one may start.

    Refuses while a rollback is unfinished or another flow run holds the rotation paused. A run resumed after its
    pause clears the pause; a rotation that stopped at its wait deadline gets a fresh deadline; the run's timings
    replace the recorded ones when they differ (said in the log).
    """
    logger = get_run_logger()
    if previous is None:
        return None
    if previous.phase.terminal:
        if ctx.flow_run_id in previous.run_ids() or flow_run.get_run_count() > 1:
            logger.info("This flow run's rotation %s has ended (%s)", previous.rotation_id, previous.phase.value)
            return previous  # a retry or a resume of a flow run: never start a second rotation
        return None
    if previous.phase is Phase.ROLLING_BACK:
        started = previous.rollback.started_at.isoformat() if previous.rollback else "?"
        raise RotationConflict(
            f"rotation {previous.rotation_id} of {ctx.user_name!r} is being rolled back (since {started}); "
            f"`keyrotor status {ctx.user_name}` says what the rollback waits for, `keyrotor rollback "
            f"{ctx.user_name}` continues it"
        )
    logger.info(
        "Continuing %s %s of %r from phase %r (started %s by %s)",
        previous.kind.value,
        previous.rotation_id,
        ctx.user_name,
        previous.phase.value,
        previous.started_at.isoformat(),
        previous.started_by,
    )
    paused_run = previous.pause.run_id if previous.pause else _paused_in_prefect(previous.last_flow_run_id)
    if paused_run and paused_run != ctx.flow_run_id:
        since = f", since {previous.pause.at.isoformat()}" if previous.pause else ""
        raise RotationConflict(
            f"rotation {previous.rotation_id} of {ctx.user_name!r} is paused (flow run {paused_run}{since}); resume "
            f"it in the Prefect UI or with `keyrotor resume {ctx.user_name}`, or roll it back"
        )
    parked = ctx.waiting.read(ctx.account_id, ctx.user_name)
    if parked is not None and parked.flow_run_id != ctx.flow_run_id and _alive_in_prefect(parked.flow_run_id):
        raise RotationConflict(
            f"rotation {previous.rotation_id} of {ctx.user_name!r} is waiting in flow run {parked.flow_run_id} for its "
            f"old key to go quiet (next check at {parked.next_check_at.isoformat(timespec='seconds')}); it holds no "
            f"process. See `keyrotor status {ctx.user_name}`; pause, resume or roll it back instead"
        )
    state = previous
    if state.pause is not None:
        logger.info("Resuming after the pause of %s (%s)", state.pause.at.isoformat(), state.pause.reason)
        state = replace(state, pause=None)
    if state.timings != timings:
        logger.info("This run's timings replace the recorded ones: %s", _changed(state.timings, timings))
        state = replace(state, timings=timings)
    if state.halted:
        logger.info("The last run stopped at its wait deadline (%s); waiting again", state.halted)
        state = replace(state, halted=None, wait_deadline=utcnow() + timings.max_wait)
    return ctx.save(state) if state != previous else previous


def _changed(before: Timings, after: Timings) -> str:
    names = [name for name in Timings.model_fields if getattr(before, name) != getattr(after, name)]
    return ", ".join(
        f"{name.replace('_', ' ')} {format_duration(getattr(before, name))} -> {format_duration(getattr(after, name))}"
        for name in names
    )


def refuse_if_just_rotated(
    ctx: RotationContext, previous: RotationState | None, keys: list[AccessKey], requested_at: datetime
) -> None:
    """Refuse a new rotation of a key that keyrotor's last rotation created, when that rotation was due within the
    cooldown of this one: two rotations in a row (two commands at once, a schedule and a person) would make
    applications switch keys twice for nothing. A schedule every cooldown or longer is never refused."""
    if previous is None or previous.phase is not Phase.COMPLETED or previous.retirement or not previous.new_key_id:
        return
    current = next((key for key in keys if key.key_id == previous.new_key_id and key.active), None)
    cooldown = ctx.settings.rotation_cooldown
    previous_due = previous.requested_at or previous.started_at
    if current is None or not within_cooldown(previous_due, requested_at, cooldown):
        return
    ended = previous.completed_at.isoformat() if previous.completed_at else "?"
    raise RotationConflict(
        f"{ctx.user_name!r} was just rotated: rotation {previous.rotation_id} (started by {previous.started_by}) "
        f"created its key {current.key_id} at {current.created.isoformat()} and completed at {ended}. Rotating "
        f"again within {format_duration(cooldown)} would make applications switch keys twice; force it (--force, "
        "or force in the form) to rotate anyway"
    )


def _alive_in_prefect(run_id: str) -> bool:
    """Whether Prefect will still run this flow run (paused, scheduled, pending or running)."""
    try:
        current = run_state(run_id)
    except Exception:  # noqa: BLE001 - Prefect unreachable: the parked run cannot be resumed either
        return False
    return current is not None and not current.is_final()


def _paused_in_prefect(run_id: str | None) -> str | None:
    """The run id if Prefect holds that run paused (the pause may not have reached the durable state)."""
    try:
        current = run_state(run_id)
    except Exception:  # noqa: BLE001 - Prefect's API being unreachable must not block a rotation
        return None
    return run_id if current is not None and current.is_paused() and current.name != WAITING else None


@step("load-rotation")
def load_rotation(ctx: RotationContext) -> RotationState:
    """The user's recorded rotation; PreconditionFailed when there is none."""
    state = ctx.records.load_state()
    if state is None:
        raise PreconditionFailed(f"no rotation of {ctx.user_name!r} is recorded")
    return state
