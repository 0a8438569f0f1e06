"""``delete-old-key``: the follow-up of a rotation, run when the grace period of the deactivated old key ends."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.settings import get_current_settings

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import check_user_name
from keyrotor.core.model import Phase
from keyrotor.core.timestamps import utcnow
from keyrotor.flows import refused, run_name
from keyrotor.settings import Settings
from keyrotor.tasks.keys import delete_deactivated_key
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.preflight import load_rotation, preflight

RUNNER_PREFETCH_SECONDS = 10.0  # what `serve` passes to its Runner


def early_start_tolerance() -> timedelta:
    """How early a scheduled run may start and wait for its time instead of failing: Prefect's runners and workers
    start due runs up to their prefetch time early (10 s by default, ``PREFECT_WORKER_PREFETCH_SECONDS``), plus a
    margin."""
    prefetch = max(RUNNER_PREFETCH_SECONDS, get_current_settings().worker.prefetch_seconds)
    return timedelta(seconds=prefetch + 10)


@flow(name="delete-old-key", flow_run_name=run_name("delete old key of"), persist_result=False)
def delete_old_key_after_grace(user_name: str, account_id: str | None = None) -> dict[str, Any] | State:
    """Delete ``user_name``'s deactivated old key if its grace period is over, completing the rotation.

    Safe to run at any time: it changes nothing before the grace period ends (a run that starts a little early,
    as runners start them, waits for it), or when the old key was made Active again, or when no rotation awaits deletion.
    """
    try:
        check_user_name(user_name)
        ctx = preflight(user_name, Settings(), account_id, "delete")
        with rotation_lease(ctx) as ctx:
            state = load_rotation(ctx)
            early = state.delete_after - utcnow() if state.delete_after else timedelta(0)
            if state.phase is Phase.DEACTIVATED and timedelta(0) < early <= early_start_tolerance():
                get_run_logger().info("Started %.1fs before the grace period ends; waiting", early.total_seconds())
                time.sleep(early.total_seconds())
            state = delete_deactivated_key(ctx, state)
    except KeyrotorError as error:
        return refused(error)
    return state.report()
