"""``delete-old-key``: the follow-up of a rotation, run when the grace period of the deactivated old key ends."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State

from keyrotor.errors import KeyrotorError
from keyrotor.flows import refused
from keyrotor.flows.rotate import summarize
from keyrotor.settings import Settings
from keyrotor.tasks.keys import delete_old_key
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.preflight import load_rotation, preflight


@flow(name="delete-old-key", persist_result=False)
def delete_old_key_after_grace(user_name: str) -> dict[str, Any] | State:
    """Delete ``user_name``'s deactivated old key if its grace period is over, completing the rotation.

    Safe to run at any time: it changes nothing before the grace period ends, or when the old key was made
    Active again, or when no rotation awaits deletion.
    """
    try:
        ctx = preflight(user_name, Settings())
        with rotation_lease(ctx) as ctx:
            state = delete_old_key(ctx, load_rotation(ctx))
    except KeyrotorError as error:
        return refused(error)
    return summarize(state)
