"""``rollback-rotation``: return a user to the old key: the way back when an application breaks after a rotation."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import check_user_name
from keyrotor.core.model import Phase
from keyrotor.flows import refused, run_name
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

PAUSE_FIRST = (
    "pause it first, then roll back: `keyrotor pause {user}` (or Pause in the Prefect UI) for a run from a "
    "deployment; Ctrl-C in the terminal running `keyrotor rotate {user}`"
)


@flow(name="rollback-rotation", flow_run_name=run_name("roll back"), persist_result=False)
def rollback_rotation(user_name: str, account_id: str | None = None) -> dict[str, Any] | State:
    """Reactivate the old key, restore the previous secret in Vault, deactivate the new key, cancel the deletion.

    Works in every phase until the old key is deleted; after that it says so and changes nothing. Running it
    again, or again after an interruption, ends in the same state.
    """
    try:
        check_user_name(user_name)
        ctx = preflight(user_name, Settings(), account_id, "rollback")
        with rotation_lease(ctx, busy_hint=PAUSE_FIRST.format(user=user_name)) as ctx:
            state = start_rollback(ctx, load_rotation(ctx))
            if state.phase is not Phase.ROLLED_BACK:
                reactivate_old_key(ctx, state)
                details: dict[str, object] = {"vault": "a retirement changes nothing in Vault"}
                if not state.retirement:  # a retirement's "new" key is the key kept: it stays as it is
                    details["vault"] = restore_previous_secret(ctx, state)
                    details["new_key_kept"] = not deactivate_new_key(ctx, state)
                details["cancelled_runs"] = cancel_pending_runs(ctx, state)
                state = finish_rollback(ctx, state, details)
    except KeyrotorError as error:
        return refused(error)
    return state.report()
