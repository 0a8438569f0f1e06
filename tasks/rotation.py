"""The rotation's two moves, one task run each: bring the new key in, and retire the old key.

Each move chains steps that record their own phase in Vault and are safe to repeat after a crash at any point
(:mod:`keyrotor.tasks.keys`, :mod:`keyrotor.tasks.vault`, :mod:`keyrotor.tasks.schedule`); the run's log shows each
step. Grouping them changes nothing in what happens, only what Prefect records: every task run costs the Prefect
server several writes, which a fleet remediation pays per user.
"""

from __future__ import annotations

from keyrotor.core.model import RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.keys import create_new_key, deactivate_old_key, delete_deactivated_key, verify_new_key
from keyrotor.tasks.schedule import schedule_deletion
from keyrotor.tasks.vault import publish_new_key


@step("introduce-new-key")
def introduce_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Create the new key, verify it with STS and publish it to Vault (phases created, verified, published)."""
    return publish_new_key.fn(ctx, verify_new_key.fn(ctx, create_new_key.fn(ctx, state)))


@step("retire-old-key")
def retire_old_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Deactivate the old key, then delete it if its grace period is over, else schedule its deletion."""
    return finish_old_key(ctx, deactivate_old_key.fn(ctx, state))


def finish_old_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Delete the deactivated old key now if its grace period is over, else schedule its deletion."""
    if state.delete_after is not None and state.delete_after <= utcnow():
        return delete_deactivated_key.fn(ctx, state)
    return schedule_deletion.fn(ctx, state)
