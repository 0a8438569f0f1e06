"""``rollback-rotation``: return a user to the old key: the way back when an application breaks after a rotation."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State

from keyrotor.errors import KeyrotorError
from keyrotor.flows import refused
from keyrotor.flows.rotate import summarize
from keyrotor.model import Phase
from keyrotor.settings import Settings
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.preflight import load_rotation, preflight
from keyrotor.tasks.rollback import (
    cancel_pending_runs,
    deactivate_new_key,
    finish_rollback,
    reactivate_old_key,
    restore_previous_secret,
    start_rollback,
)


@flow(name="rollback-rotation", persist_result=False)
def rollback_rotation(user_name: str) -> dict[str, Any] | State:
    """Reactivate the old key, restore the previous secret in Vault, deactivate the new key, cancel the deletion.

    Works in every phase until the old key is deleted; after that it says so and changes nothing. Running it
    again, or again after an interruption, ends in the same state.
    """
    try:
        ctx = preflight(user_name, Settings())
        with rotation_lease(ctx) as ctx:
            state = start_rollback(ctx, load_rotation(ctx))
            if state.phase is not Phase.ROLLED_BACK:
                reactivate_old_key(ctx, state)
                restored = "a retirement changes nothing in Vault"
                if not state.retirement:  # a retirement's "new" key is the key kept: it stays as it is
                    restored = restore_previous_secret(ctx, state)
                    deactivate_new_key(ctx, state)
                cancelled = cancel_pending_runs(ctx, state)
                state = finish_rollback(ctx, state, {"vault": restored, "cancelled_runs": cancelled})
    except KeyrotorError as error:
        return refused(error)
    return summarize(state)
