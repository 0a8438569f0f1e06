"""``delete-old-key``: the follow-up of a rotation, run when the grace period of the deactivated old key ends (or,
after a rollback, of the deactivated new key)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import deployment
from prefect.settings import get_current_settings

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import UserRequest
from keyrotor.core.model import Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.flows import refused, run_name
from keyrotor.settings import Settings
from keyrotor.tasks.keys import delete_deactivated_key
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.preflight import load_rotation, preflight
from keyrotor.tasks.report import following, tag_this_run
from keyrotor.tasks.rollback import delete_new_key

RUNNER_PREFETCH_SECONDS = 10.0  # what `serve` passes to its Runner


def early_start_tolerance() -> timedelta:
    """How early a scheduled run may start and wait for its time instead of failing: Prefect's runners and workers
    start due runs up to their prefetch time early (10 s by default, ``PREFECT_WORKER_PREFETCH_SECONDS``), plus a
    margin."""
    prefetch = max(RUNNER_PREFETCH_SECONDS, get_current_settings().worker.prefetch_seconds)
    return timedelta(seconds=prefetch + 10)


@flow(name="delete-old-key", flow_run_name=run_name("delete old key of"), persist_result=False)
def delete_old_key_after_grace(request: UserRequest) -> RotationState | State:
    """Delete the user's deactivated old key (or a rolled-back rotation's new key) if its grace period is over.

    Safe to run at any time: it changes nothing before the grace period ends (a run that starts a little early,
    as runners start them, waits for it), or when the key was made Active again, or when nothing awaits deletion.
    """
    try:
        return delete_when_due(request, Settings())
    except KeyrotorError as error:
        return refused(error)


def delete_when_due(request: UserRequest, settings: Settings) -> RotationState:
    """The procedure itself (see :func:`delete_old_key_after_grace`)."""
    ctx = following(preflight(request, settings, "delete"))
    tag_this_run(ctx)
    with rotation_lease(ctx) as leased:
        state = load_rotation(leased)
        rollback = state.rollback
        if state.phase is Phase.ROLLED_BACK and rollback is not None and rollback.delete_after is not None:
            _wait_if_a_little_early(leased.sleep, rollback.delete_after - utcnow())
            return delete_new_key(leased, state)
        if state.phase is Phase.DEACTIVATED and state.delete_after is not None:
            _wait_if_a_little_early(leased.sleep, state.delete_after - utcnow())
        return delete_deactivated_key(leased, state)


def _wait_if_a_little_early(sleep: Callable[[float], None], early: timedelta) -> None:
    """A scheduled run that a runner or worker started up to its prefetch early waits for its time; a person's
    ``keyrotor finish`` before the time is refused instead (by the step)."""
    if deployment.id is not None and timedelta(0) < early <= early_start_tolerance():
        get_run_logger().info("Started %.1fs before the grace period ends; waiting", early.total_seconds())
        sleep(early.total_seconds())
