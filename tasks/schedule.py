"""Schedule the old key's deletion as a later flow run, so nothing waits through the grace period."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.exceptions import ObjectNotFound

from keyrotor.adapters.prefect_api import start_run
from keyrotor.core.model import RotationState
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext


@step("schedule-deletion")
def schedule_deletion(ctx: RotationContext, state: RotationState) -> RotationState:
    """Create a flow run of the delete deployment at the end of the grace period (once per rotation).

    Without that deployment on the Prefect server the deletion stays due in the durable state, and
    ``keyrotor finish USER`` (or serving the deployments) carries it out later.
    """
    logger = get_run_logger()
    if state.deletion_run_id:
        return state
    name = ctx.settings.delete_deployment
    try:
        run = start_run(
            name,
            parameters={"user_name": ctx.user_name, "account_id": ctx.account_id},
            idempotency_key=f"{state.rotation_id}:delete-old-key",
            scheduled_time=state.delete_after,
        )
    except ObjectNotFound:
        logger.warning(
            "No deployment %r on this Prefect server: the old key %s is due for deletion at %s; "
            "run `keyrotor finish %s` then, or serve the deployments (`keyrotor serve`).",
            name,
            state.old_key_id,
            state.delete_after,
            ctx.user_name,
        )
        return state
    logger.info("Deletion of old key %s scheduled at %s (flow run %s)", state.old_key_id, state.delete_after, run.id)
    return ctx.save(state.evolve(deletion_run_id=str(run.id)))
