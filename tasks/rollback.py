"""Steps of a rollback: back to the old key. Each checks IAM and Vault first, so a rollback can run twice."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled

from keyrotor.adapters.prefect_api import prefect_call
from keyrotor.core.errors import PreconditionFailed, RollbackImpossible
from keyrotor.core.model import KeyStatus, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.failpoints import failpoint
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext


@step("start-rollback")
def start_rollback(ctx: RotationContext, state: RotationState) -> RotationState:
    """Refuse, changing nothing, when there is nothing to return to; else record that the rollback started.

    Once recorded, no rotation run continues this rotation: only a rollback can finish it.
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
    if state.rollback_started_at is not None:
        get_run_logger().info("Finishing the rollback started at %s", state.rollback_started_at.isoformat())
        return state
    return ctx.save(state.evolve(rollback_started_at=utcnow(), rollback={"from_phase": state.phase.value}))


@step("reactivate-old-key")
def reactivate_old_key(ctx: RotationContext, state: RotationState) -> None:
    """Make the old key Active again (first, so applications still holding it work at once)."""
    old = next(key for key in ctx.iam.list_keys(ctx.user_name) if key.key_id == state.old_key_id)
    if not old.active:
        ctx.iam.set_status(ctx.user_name, old.key_id, KeyStatus.ACTIVE)
        get_run_logger().info("Reactivated old key %s of %r", old.key_id, ctx.user_name)
    failpoint("rollback-reactivated")


@step("restore-previous-secret")
def restore_previous_secret(ctx: RotationContext, state: RotationState) -> str:
    """Write the secret's version from before the publish as a new version, so KV history shows the rollback."""
    logger = get_run_logger()
    current = ctx.records.published()
    if current is None or current.key_id != state.new_key_id:
        note = f"Vault names {current.key_id if current else 'no key'}, not the new key: left as it is"
        logger.info(note)
        return note
    if not state.previous_secret_version:
        note = (
            f"Vault held no secret before the rotation, so {ctx.records.paths.secret} keeps naming the new key "
            f"{state.new_key_id}, which stays active: applications that read Vault use it. The old key "
            f"{state.old_key_id} is active again for those that kept it; deactivate the new key once nothing uses it"
        )
        logger.warning(note)
        return note
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
    return note


@step("deactivate-new-key")
def deactivate_new_key(ctx: RotationContext, state: RotationState) -> bool:
    """Make the new key Inactive and destroy its unpublished copy, if any; True when it was deactivated.

    Never while Vault names the new key: applications reading Vault would then hold a key that does not work
    (a user's first rotation, with no secret before it to restore). It stays active and the note says so.
    """
    ctx.records.discard_stash()
    published = ctx.records.published()
    if published is not None and published.key_id == state.new_key_id:
        get_run_logger().warning("Vault names the new key %s: keeping it active", state.new_key_id)
        return False
    new = next((key for key in ctx.iam.list_keys(ctx.user_name) if key.key_id == state.new_key_id), None)
    if new is not None and new.active:
        ctx.iam.set_status(ctx.user_name, new.key_id, KeyStatus.INACTIVE)
        get_run_logger().info("Deactivated new key %s of %r", new.key_id, ctx.user_name)
    return True


@step("cancel-pending-runs")
def cancel_pending_runs(ctx: RotationContext, state: RotationState) -> list[str]:
    """Cancel the scheduled deletion and a paused or parked rotation run, so none acts on a rolled-back rotation,
    and drop the rotation from the waiting index."""
    cancelled = []
    parked = ctx.waiting.read(ctx.account_id, ctx.user_name)
    waiting_run = parked.flow_run_id if parked else None
    with prefect_call("cancel the rotation's pending flow runs"), get_client(sync_client=True) as client:
        for run_id in {state.deletion_run_id, state.paused_run_id, waiting_run} - {None, ctx.flow_run_id}:
            try:
                run = client.read_flow_run(UUID(run_id))
            except ObjectNotFound:
                continue
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(
                    run.id, Cancelled(message=f"rotation {state.rotation_id} rolled back"), force=True
                )
                cancelled.append(str(run_id))
                get_run_logger().info("Cancelled flow run %s (%s)", run.name, run.state.name)
    ctx.waiting.remove(ctx.account_id, ctx.user_name)
    return cancelled


@step("finish-rollback")
def finish_rollback(ctx: RotationContext, state: RotationState, details: dict[str, Any]) -> RotationState:
    """Record the rollback as the rotation's ending."""
    return ctx.save(
        state.evolve(phase=Phase.ROLLED_BACK, rolled_back_at=utcnow(), rollback={**(state.rollback or {}), **details})
    )
