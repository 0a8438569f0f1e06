"""``rotate-access-key``: rotate one IAM user's access key without breaking the applications that use it.

The procedure a careful person follows, each step safe to run again after a crash at any moment:
create a new key, verify it, publish it to Vault, wait until the old key has gone quiet, deactivate the old
key, and delete it when the grace period ends (a later flow run, so nothing waits through the grace period).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import Abort
from prefect.states import State
from pydantic import ValidationError

from keyrotor.context import RotationContext
from keyrotor.errors import ConfigurationError, KeyrotorError
from keyrotor.flows import refused
from keyrotor.logic import Quiet
from keyrotor.model import LastUsed, Phase, RotationState, utcnow
from keyrotor.settings import Settings, Timings
from keyrotor.tasks.approval import ask_approval, reject_rotation
from keyrotor.tasks.keys import check_old_key, stop_waiting
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.pause import stop_if_suspended
from keyrotor.tasks.preflight import preflight, start_rotation
from keyrotor.tasks.rotation import introduce_new_key, retire_old_key

PAUSE_CHECK_SECONDS = 2.0


@flow(name="rotate-access-key", persist_result=False, validate_parameters=True)
def rotate_access_key(
    user_name: str,
    quiet_period: str | None = None,
    poll_interval: str | None = None,
    max_wait: str | None = None,
    grace_period: str | None = None,
    require_approval: bool = False,
) -> dict[str, Any] | State:
    """Rotate ``user_name``'s access key, or continue the rotation in progress.

    Args:
        user_name: The IAM user.
        quiet_period: How long the old key must go unused after the publish (e.g. "1d"); default from settings.
        poll_interval: How often to check the old key's last use while waiting (e.g. "15m").
        max_wait: Stop waiting after this long, leaving both keys active (e.g. "7d").
        grace_period: Keep the deactivated old key this long before deleting it (e.g. "7d"; "0s" deletes at once).
        require_approval: Before deactivating, pause with the last-used evidence until an operator approves.
    """
    try:
        return rotate(user_name, quiet_period, poll_interval, max_wait, grace_period, require_approval=require_approval)
    except KeyrotorError as error:
        return refused(error)


def rotate(user_name: str, *durations: str | None, require_approval: bool = False) -> dict[str, Any]:
    """The procedure itself (see :func:`rotate_access_key`)."""
    settings = Settings()
    timings = resolve_timings(settings, *durations)
    overridden = any(value is not None for value in durations)
    ctx = preflight(user_name, settings)
    with rotation_lease(ctx) as ctx:
        state = start_rotation(ctx, timings, overridden)
        if state.phase.terminal:
            return summarize(state)
        try:
            state = introduce_new_key(ctx, state)  # create, verify with STS, publish to Vault
            state, evidence = wait_until_old_key_is_quiet(ctx, state)
            if require_approval and evidence is not None and state.phase is Phase.PUBLISHED:
                answer = ask_approval(ctx, state, evidence, timings.max_wait)
                if not answer.approve:
                    state = reject_rotation(ctx, state, answer.note)
                    return summarize(state)
            state = retire_old_key(ctx, state)  # deactivate, then delete (grace period over) or schedule it
        except Abort:  # Prefect refused to run the next task: the run was suspended meanwhile
            stop_if_suspended(ctx, state)
            raise
    get_run_logger().info("Rotation %s of %r: %s", state.rotation_id, user_name, state.phase.value)
    return summarize(state)


def wait_until_old_key_is_quiet(ctx: RotationContext, state: RotationState) -> tuple[RotationState, LastUsed | None]:
    """Poll the old key's last use until it has been quiet for the quiet period, or stop at the deadline.

    Returns the state and the last-used evidence that showed the key quiet (None when there was nothing to wait for).
    """
    if state.phase is not Phase.PUBLISHED or state.old_key_id is None:
        return state, None
    while True:
        check = check_old_key(ctx, state)
        if check.decision.outcome is Quiet.QUIET:
            return state, check.last_used
        if check.decision.outcome is Quiet.DEADLINE:
            stop_waiting(ctx, state, check)
        assert check.decision.next_check_at is not None
        while (remaining := (check.decision.next_check_at - utcnow()).total_seconds()) > 0:
            time.sleep(min(remaining, PAUSE_CHECK_SECONDS))
            stop_if_suspended(ctx, state)


def resolve_timings(settings: Settings, *durations: str | None) -> Timings:
    """The settings' timings with this run's explicit durations applied; bad input is a ConfigurationError."""
    names = ("quiet_period", "poll_interval", "max_wait", "grace_period")
    try:
        return settings.timings.with_overrides(**dict(zip(names, durations, strict=False)))
    except (ValidationError, ValueError) as error:
        raise ConfigurationError(_first_error(error)) from None


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where.replace('_', '-')}: {first['msg']}" if where else str(first["msg"])
    return str(error)


def summarize(state: RotationState) -> dict[str, Any]:
    """The rotation's outcome for people and scripts (no secrets: the state record holds none)."""
    record = state.to_record()
    record["version"] = state.version
    return record
