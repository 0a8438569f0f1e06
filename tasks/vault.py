"""Steps against Vault: publish the new key where applications read it."""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger

from keyrotor.adapters.records import Published
from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import Phase, RotationState
from keyrotor.core.timestamps import parse_vault_time
from keyrotor.failpoints import failpoint
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext


@step("publish-new-key")
def publish_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Write the verified key to the secret path (check-and-set), then destroy the stash.

    The previous version number is recorded so a rollback can restore it. If the last run wrote the secret
    but died before recording it, the secret already names the new key and this step only records it.
    """
    if state.phase.reached(Phase.PUBLISHED):
        ctx.records.discard_stash()  # the last run may have died between recording the publish and this
        return state
    logger = get_run_logger()
    current = ctx.records.published()
    if current is not None and current.key_id == state.new_key_id:
        published: Published = current
        previous = current.version - 1
    else:
        credentials = ctx.records.stashed()
        if credentials is None or credentials.key_id != state.new_key_id:
            raise PreconditionFailed(
                f"the secret of new key {state.new_key_id} is neither published nor stashed; "
                "roll back this rotation and start again"
            )
        previous = current.version if current else 0
        published = ctx.records.publish(credentials, cas=previous)
        failpoint("after-publish")
    published_at = parse_vault_time(published.created_time)
    state = ctx.save(
        replace(
            state,
            phase=Phase.PUBLISHED,
            published_at=published_at,
            published_version=published.version,
            previous_secret_version=previous,
            wait_deadline=published_at + state.timings.max_wait,
        )
    )
    ctx.records.discard_stash()
    logger.info(
        "Published new key %s to %s/%s (version %d); applications can switch now",
        state.new_key_id,
        ctx.records.kv.mount,
        ctx.records.paths.secret,
        published.version,
    )
    return state
