"""Steps of a rollback: a rotation in reverse. Each checks IAM and Vault first, so a rollback can run twice.

The old key is made Active and its secret restored in Vault at once, so every application that kept the old key,
or re-reads Vault, works. The new key stays Active until it has gone unused for the quiet period (the same wait as
a rotation's, parked and woken the same way), so no application that already moved to it is refused; then it is
deactivated, and deleted after the grace period. ``now`` (a leaked key) deactivates it at once instead.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import get_run_logger

from keyrotor.adapters.prefect_runs import PrefectRuns
from keyrotor.core.errors import KeyrotorError, PreconditionFailed, RollbackImpossible
from keyrotor.core.model import KeyStatus, Phase, Rollback, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.failpoints import failpoint
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.schedule import schedule_key_deletion


@step("start-rollback")
def start_rollback(ctx: RotationContext, state: RotationState, now: bool) -> RotationState:
    """Refuse, changing nothing, when there is nothing to return to; else record that the rollback started.

    Once recorded (phase ``rolling_back``), no rotation run continues this rotation: only a rollback can finish it.
    """
    if state.phase is Phase.ROLLED_BACK:
        return state
    if state.phase is Phase.COMPLETED:
        raise RollbackImpossible(
            f"rollback of {ctx.user_name!r} is impossible: the old key {state.old_key_id} was deleted at "
            f"{state.completed_at.isoformat() if state.completed_at else '?'} (rotation {state.rotation_id}). "
            "Nothing was changed."
        )
    if state.phase is Phase.FAILED:
        raise PreconditionFailed(
            f"rotation {state.rotation_id} failed and already left the old key as it was: {state.error}"
        )
    if state.old_key_id is None:
        raise PreconditionFailed(f"rotation {state.rotation_id} of {ctx.user_name!r} had no old key to return to")
    if state.old_key_id not in {key.key_id for key in ctx.iam.list_keys(ctx.user_name)}:
        raise RollbackImpossible(
            f"rollback of {ctx.user_name!r} is impossible: the old key {state.old_key_id} no longer exists in IAM "
            "(deleted outside keyrotor). Nothing was changed."
        )
    if state.rollback is not None:
        get_run_logger().info("Continuing the rollback started at %s", state.rollback.started_at.isoformat())
        if now and not state.rollback.now:
            return ctx.save(replace(state, rollback=replace(state.rollback, now=True)))
        return state
    rollback = Rollback(started_at=utcnow(), from_phase=state.phase, now=now)
    return ctx.save(replace(state, phase=Phase.ROLLING_BACK, rollback=rollback, pause=None, halted=None))


@step("restore-old-key")
def restore_old_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Make the old key Active, put its secret back in Vault, and cancel the runs that would act on the rotation:
    from here every application works with the old key."""
    rollback = _rollback(state)
    if rollback.restored_at is not None:
        return state
    _reactivate_old_key(ctx, state)
    vault, kept = "a retirement changes nothing in Vault", False
    if not state.retirement:  # a retirement's "new" key is the key kept: it stays as it is
        vault, kept = _restore_previous_secret(ctx, state)
    cancelled = cancel_pending_runs(ctx, state)
    now = utcnow()
    restored = replace(
        rollback,
        restored_at=now,
        vault=vault,
        new_key_kept=kept,
        cancelled_runs=tuple(cancelled),
        wait_deadline=now + state.timings.max_wait,
    )
    return ctx.save(replace(state, rollback=restored))


def _reactivate_old_key(ctx: RotationContext, state: RotationState) -> None:
    old = next(key for key in ctx.iam.list_keys(ctx.user_name) if key.key_id == state.old_key_id)
    if not old.active:
        ctx.iam.set_status(ctx.user_name, old.key_id, KeyStatus.ACTIVE)
        get_run_logger().info("Reactivated old key %s of %r", old.key_id, ctx.user_name)
    failpoint("rollback-reactivated")


def _restore_previous_secret(ctx: RotationContext, state: RotationState) -> tuple[str, bool]:
    """Write the secret's version from before the publish as a new version, so KV history shows the rollback.
    Returns what happened, and whether Vault keeps naming the new key (nothing to restore: a first rotation)."""
    logger = get_run_logger()
    current = ctx.records.published()
    if current is None or current.key_id != state.new_key_id:
        note = f"Vault names {current.key_id if current else 'no key'}, not the new key: left as it is"
        logger.info(note)
        return note, False
    if not state.previous_secret_version:
        note = (
            f"Vault held no secret before the rotation, so {ctx.records.paths.secret} keeps naming the new key "
            f"{state.new_key_id}, which stays active: applications that read Vault use it. The old key "
            f"{state.old_key_id} is active again for those that kept it; deactivate the new key once nothing uses it"
        )
        logger.warning(note)
        return note, True
    previous = ctx.records.published_credentials(version=state.previous_secret_version)
    if previous is None:
        raise PreconditionFailed(
            f"version {state.previous_secret_version} of {ctx.records.paths.secret} is gone from Vault; "
            "restore the old key's secret by hand"
        )
    restored = ctx.records.publish(previous, cas=current.version)
    failpoint("rollback-restored")
    note = f"restored version {state.previous_secret_version} as version {restored.version} (key {previous.key_id})"
    logger.info("Vault %s: %s", ctx.records.paths.secret, note)
    return note, False


def cancel_pending_runs(ctx: RotationContext, state: RotationState) -> list[str]:
    """Cancel the scheduled deletion and a paused or parked rotation run, so none acts on a rolled-back rotation,
    and drop the rotation from the waiting index."""
    logger = get_run_logger()
    runs = PrefectRuns()
    parked = ctx.waiting.read(ctx.account_id, ctx.user_name)
    candidates = [state.deletion_run_id, state.pause.run_id if state.pause else None]
    candidates += [parked.flow_run_id if parked else None, state.last_flow_run_id]
    cancelled = []
    for run_id in sorted({run for run in candidates if run and run != ctx.flow_run_id}):
        run = runs.read(run_id)
        if run is None or run.final or run.state.value == "RUNNING":
            continue  # a running rotation run holds the lease: the rollback refused before getting here
        runs.cancel(run_id, f"rotation {state.rotation_id} rolled back")
        cancelled.append(run_id)
        logger.info("Cancelled flow run %s (%s)", run.name, run.state_name)
    ctx.waiting.remove(ctx.account_id, ctx.user_name)
    return cancelled


def new_key_needs_wait(ctx: RotationContext, state: RotationState) -> bool:
    """Whether applications may hold the new key: it was published (and is Vault's no more), it is Active, and the
    operator did not ask to deactivate it now."""
    rollback = _rollback(state)
    if state.retirement or rollback.new_key_kept or rollback.now or state.new_key_id is None:
        return False
    if not rollback.from_phase.reached(Phase.PUBLISHED):
        return False  # never published: no application can hold it
    new = next((key for key in ctx.iam.list_keys(ctx.user_name) if key.key_id == state.new_key_id), None)
    return new is not None and new.active


@step("retire-new-key")
def retire_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Deactivate the new key (never while Vault names it), schedule its deletion after the grace period, and record
    the rollback as the rotation's ending."""
    rollback = _rollback(state)
    logger = get_run_logger()
    now = utcnow()
    ctx.records.discard_stash()
    keys = {key.key_id: key for key in ctx.iam.list_keys(ctx.user_name)}
    new = keys.get(state.new_key_id or "")
    published = ctx.records.published()
    if state.retirement or rollback.new_key_kept or new is None:
        return ctx.save(replace(state, phase=Phase.ROLLED_BACK, completed_at=now))
    if published is not None and published.key_id == new.key_id:
        logger.warning("Vault names the new key %s: keeping it active", new.key_id)
        kept = replace(rollback, new_key_kept=True)
        return ctx.save(replace(state, phase=Phase.ROLLED_BACK, rollback=kept, completed_at=now))
    if new.active:
        if rollback.now:
            logger.warning(
                "Deactivating new key %s now, as asked: applications that still hold it are refused until they "
                "re-read Vault (which names the old key %s)",
                new.key_id,
                state.old_key_id,
            )
        ctx.iam.set_status(ctx.user_name, new.key_id, KeyStatus.INACTIVE)
        failpoint("rollback-deactivated")
        logger.info("Deactivated new key %s of %r", new.key_id, ctx.user_name)
    deactivated = rollback.new_key_deactivated_at or now
    rollback = replace(
        rollback, new_key_deactivated_at=deactivated, delete_after=deactivated + state.timings.grace_period
    )
    state = ctx.save(replace(state, phase=Phase.ROLLED_BACK, rollback=rollback, completed_at=now))
    return delete_or_schedule_new_key(ctx, state)


def delete_or_schedule_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Delete the deactivated new key now if its grace period is over, else schedule its deletion (once)."""
    rollback = _rollback(state)
    if rollback.delete_after is None or rollback.new_key_deleted_at is not None or state.new_key_id is None:
        return state
    if rollback.delete_after <= utcnow():
        return delete_new_key(ctx, state)
    if rollback.deletion_run_id:
        return state
    run_id = schedule_key_deletion(ctx, state, state.new_key_id, rollback.delete_after, "new")
    return ctx.save(replace(state, rollback=replace(rollback, deletion_run_id=run_id))) if run_id else state


def delete_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Delete the rolled-back new key once its grace period is over; refuse if someone made it Active again."""
    rollback = _rollback(state)
    if rollback.new_key_deleted_at is not None:
        return state
    if rollback.delete_after is None or utcnow() < rollback.delete_after:
        raise PreconditionFailed(
            f"the new key {state.new_key_id} may be deleted from {_at(rollback.delete_after)}, not before"
        )
    new = next((key for key in ctx.iam.list_keys(ctx.user_name) if key.key_id == state.new_key_id), None)
    if new is not None and new.active:
        raise PreconditionFailed(f"the new key {new.key_id} is Active again (reactivated by someone); not deleting it")
    if new is not None:
        ctx.iam.delete_key(ctx.user_name, new.key_id)
        get_run_logger().info("Deleted new key %s of %r", new.key_id, ctx.user_name)
    return ctx.save(replace(state, rollback=replace(rollback, new_key_deleted_at=utcnow())))


def _rollback(state: RotationState) -> Rollback:
    if state.rollback is None:
        raise KeyrotorError(f"rotation {state.rotation_id} has no rollback recorded")
    return state.rollback


def _at(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "?"
