"""Before anything changes: connect, check Vault and the user, then start a rotation or pick up the one in progress."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from prefect import get_run_logger
from prefect.runtime import flow_run

from keyrotor.adapters.accounts import check_account_id
from keyrotor.adapters.connections import Connections, whoami
from keyrotor.adapters.prefect_api import WAITING, run_state
from keyrotor.core.decisions import plan_slots
from keyrotor.core.durations import format_duration
from keyrotor.core.errors import PreconditionFailed, RotationConflict
from keyrotor.core.inputs import check_user_name
from keyrotor.core.model import AccessKey, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.settings import Settings, Timings
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext

#: How long the first look at Vault retries before a run gives up, changing nothing (an operator is waiting).
FIRST_CONTACT = timedelta(seconds=5)


def preflight(
    user_name: str, settings: Settings, account_id: str | None = None, purpose: str = "rotate"
) -> RotationContext:
    """Connect to AWS (in ``account_id``: the caller's own account when None) and Vault and check, read-only, that
    the rotation can run at all.

    A plain function, not a task: it changes nothing, and its failure is the flow run's failure, message and all.

    Fails before any change when Vault is unreachable, the token is refused, the mount is missing or not
    KV v2, AWS credentials are wrong, the role in the member account cannot be assumed, or the user does not exist.
    """
    check_user_name(user_name)
    if account_id is not None:
        check_account_id(account_id)
    connections = Connections.from_settings(settings).for_account(account_id, f"{purpose}-{user_name}")
    connections.kv.check(retry_for=min(settings.vault_retry_timeout, FIRST_CONTACT))
    connections.iam.ensure_user(user_name)
    run_id = flow_run.get_id()
    actor = f"{whoami()}, flow run {flow_run.get_name() or '-'} ({run_id or 'none'})"
    return RotationContext(
        user_name=user_name,
        account_id=connections.account_id,
        iam=connections.iam,
        records=connections.records(user_name),
        waiting=connections.waiting,
        settings=settings,
        actor=actor,
        flow_run_id=run_id,
    )


@step("start-rotation")
def start_rotation(ctx: RotationContext, timings: Timings, overridden: bool, force: bool = False) -> RotationState:
    """Continue the rotation in progress, or record a new one after choosing the key to retire.

    See :func:`continue_recorded` for carrying on. A new rotation is refused (nothing changed) when the user has
    two active keys, or (unless ``force``) when keyrotor's last rotation created the current key moments ago.
    """
    logger = get_run_logger()
    previous = ctx.records.load_state()
    now = utcnow()
    recorded = continue_recorded(ctx, previous, timings, overridden)
    if recorded is not None:
        return recorded

    keys = ctx.iam.list_keys(ctx.user_name)
    if not force:
        refuse_if_just_rotated(ctx, previous, keys, now)
    plan = plan_slots(ctx.user_name, keys)
    state = RotationState(
        rotation_id=uuid.uuid4().hex[:12],
        user_name=ctx.user_name,
        account_id=ctx.account_id,
        phase=Phase.STARTED,
        timings=timings.as_seconds(),
        started_at=now,
        started_by=ctx.actor,
        old_key_id=plan.old_key.key_id if plan.old_key else None,
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


def continue_recorded(
    ctx: RotationContext, previous: RotationState | None, timings: Timings, overridden: bool
) -> RotationState | None:
    """The recorded rotation this run must carry on (or has ended), or None when a new one may start.

    Refuses while a rollback is unfinished or another flow run holds the rotation paused. A run resumed after its
    pause clears the pause; a rotation that stopped at its wait deadline gets a fresh deadline; timings given
    explicitly to this run replace the recorded ones.
    """
    logger = get_run_logger()
    if previous is None:
        return None
    if previous.phase.terminal:
        if ctx.flow_run_id in previous.run_ids() or flow_run.get_run_count() > 1:
            logger.info("This flow run's rotation %s has ended (%s)", previous.rotation_id, previous.phase.value)
            return previous  # a retry or a resume of a flow run: never start a second rotation
        return None
    logger.info(
        "Continuing %s %s of %r from phase %r (started %s by %s)",
        previous.kind,
        previous.rotation_id,
        ctx.user_name,
        previous.phase.value,
        previous.started_at.isoformat(),
        previous.started_by,
    )
    if previous.rollback_started_at is not None:
        raise RotationConflict(
            f"a rollback of rotation {previous.rotation_id} started at {previous.rollback_started_at.isoformat()} "
            f"and did not finish; run `keyrotor rollback {ctx.user_name}` to finish it"
        )
    paused_run = previous.paused_run_id or _paused_in_prefect(previous.last_flow_run_id)
    if paused_run and paused_run != ctx.flow_run_id:
        raise RotationConflict(
            f"rotation {previous.rotation_id} of {ctx.user_name!r} is paused (flow run {paused_run}"
            f"{', since ' + previous.paused_at.isoformat() if previous.paused_at else ''}); resume it in the "
            f"Prefect UI or with `keyrotor resume {ctx.user_name}`, or roll it back"
        )
    parked = ctx.waiting.read(ctx.account_id, ctx.user_name)
    if parked is not None and parked.flow_run_id != ctx.flow_run_id and _alive_in_prefect(parked.flow_run_id):
        raise RotationConflict(
            f"rotation {previous.rotation_id} of {ctx.user_name!r} is waiting in flow run {parked.flow_run_id} for its "
            f"old key to go quiet (next check at {parked.next_check_at.isoformat(timespec='seconds')}); it holds no "
            f"process. See `keyrotor status {ctx.user_name}`; pause, resume or roll it back instead"
        )
    changes: dict[str, object] = {}
    if previous.paused_run_id:
        logger.info("Resuming after the pause of %s", previous.paused_at.isoformat() if previous.paused_at else "?")
        changes.update(paused_run_id=None, paused_at=None, pause_reason=None)
    if overridden and previous.timings != timings.as_seconds():
        changes["timings"] = timings.as_seconds()
    if previous.halted:
        logger.info("The last run stopped at its wait deadline (%s); waiting again", previous.halted)
        wait = timings.max_wait if overridden else previous.timing("max_wait")
        changes.update(halted=None, wait_deadline=utcnow() + wait)
    return ctx.save(previous.evolve(**changes)) if changes else previous


def refuse_if_just_rotated(
    ctx: RotationContext, previous: RotationState | None, keys: list[AccessKey], now: datetime
) -> None:
    """Refuse a new rotation of a key that keyrotor's last rotation created within the cooldown: two rotations in a
    row (two commands at once, a schedule and a person) would make applications switch keys twice for nothing."""
    if previous is None or previous.phase is not Phase.COMPLETED or previous.retirement or not previous.new_key_id:
        return
    current = next((key for key in keys if key.key_id == previous.new_key_id and key.active), None)
    cooldown = ctx.settings.rotation_cooldown
    if current is None or now - current.created >= cooldown:
        return
    ended = previous.completed_at.isoformat() if previous.completed_at else "?"
    raise RotationConflict(
        f"{ctx.user_name!r} was just rotated: rotation {previous.rotation_id} (started by {previous.started_by}) "
        f"created its key {current.key_id} at {current.created.isoformat()} and completed at {ended}. Rotating "
        f"again within {format_duration(cooldown)} would make applications switch keys twice; pass --force "
        "(parameter force) to rotate anyway"
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
