"""Schedule a key's deletion as a later flow run, so nothing waits through the grace period."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import get_run_logger
from prefect.exceptions import ObjectNotFound

from keyrotor.adapters.prefect_api import start_run
from keyrotor.core.inputs import UserRequest
from keyrotor.core.model import RotationState
from keyrotor.core.naming import run_title, user_tags
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext


def schedule_key_deletion(
    ctx: RotationContext, state: RotationState, key_id: str, at: datetime, which: str
) -> str | None:
    """Create a flow run of the delete deployment at ``at``, named and tagged for the user from its creation (once
    per rotation and key: a repeat finds the same run); None when the Prefect server has no such deployment (the
    deletion stays due in the durable state, and ``keyrotor finish USER`` or the hourly sweep carries it out)."""
    name = ctx.settings.delete_deployment
    request = UserRequest(user_name=ctx.user_name, account_id=ctx.account_id)
    try:
        run = start_run(
            name,
            parameters={"request": request.model_dump(mode="json")},
            tags=["keyrotor", *user_tags(ctx.user_name, ctx.account_id)],
            idempotency_key=f"{state.rotation_id}:delete-{which}-key",
            scheduled_time=at,
            flow_run_name=run_title(f"delete {which} key of", ctx.user_name, ctx.account_id),
        )
    except ObjectNotFound:
        get_run_logger().warning(
            "No deployment %r on this Prefect server: the %s key %s is due for deletion at %s; run `keyrotor finish "
            "%s` then, or serve the deployments (`keyrotor serve`).",
            name,
            which,
            key_id,
            at.isoformat(timespec="seconds"),
            ctx.user_name,
        )
        return None
    get_run_logger().info(
        "Deletion of the %s key %s scheduled at %s (flow run %s)",
        which,
        key_id,
        at.isoformat(timespec="seconds"),
        run.name,
    )
    return str(run.id)


@step("schedule-deletion")
def schedule_deletion(ctx: RotationContext, state: RotationState) -> RotationState:
    """Schedule the deactivated old key's deletion at the end of the grace period (once per rotation)."""
    if state.deletion_run_id or state.delete_after is None or state.old_key_id is None:
        return state
    run_id = schedule_key_deletion(ctx, state, state.old_key_id, state.delete_after, "old")
    return ctx.save(replace(state, deletion_run_id=run_id)) if run_id else state
