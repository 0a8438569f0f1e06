"""``retire-access-key``: retire one key without creating a new one (two active keys, or an unused key).

The same safe tail as a rotation: wait until the key has gone unused for the quiet period, deactivate it, and
delete it after the grace period; pausable, resumable and reversible (rollback reactivates it) the same way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow
from prefect.states import State

from keyrotor.errors import KeyrotorError
from keyrotor.flows import refused
from keyrotor.flows.rotate import resolve_timings, summarize, wait_until_old_key_is_quiet
from keyrotor.settings import Settings
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.preflight import preflight
from keyrotor.tasks.retire import start_retirement
from keyrotor.tasks.rotation import retire_old_key


@flow(name="retire-access-key", persist_result=False)
def retire_access_key(
    user_name: str,
    key_id: str,
    keep_key_id: str | None = None,
    min_idle_days: int | None = None,
    quiet_period: str | None = None,
    poll_interval: str | None = None,
    max_wait: str | None = None,
    grace_period: str | None = None,
) -> dict[str, Any] | State:
    """Retire ``key_id`` of ``user_name``, keeping ``keep_key_id``.

    Args:
        user_name: The IAM user.
        key_id: The access key to deactivate and later delete.
        keep_key_id: The user's other key, which must stay Active (None when the user keeps no key).
        min_idle_days: Refuse unless the key is still unused for this many days (for unused keys).
        quiet_period: How long the key must go unused from now before it is deactivated.
        poll_interval: How often its last use is checked while waiting.
        max_wait: Stop waiting after this long, leaving it active.
        grace_period: Keep it deactivated this long before deleting it.
    """
    try:
        settings = Settings()
        durations = (quiet_period, poll_interval, max_wait, grace_period)
        timings = resolve_timings(settings, *durations)
        overridden = any(value is not None for value in durations)
        min_idle = timedelta(days=min_idle_days) if min_idle_days is not None else None
        ctx = preflight(user_name, settings)
        with rotation_lease(ctx) as ctx:
            state = start_retirement(ctx, timings, overridden, key_id, keep_key_id, min_idle)
            if not state.phase.terminal:
                state, _ = wait_until_old_key_is_quiet(ctx, state)
                state = retire_old_key(ctx, state)
    except KeyrotorError as error:
        return refused(error)
    return summarize(state)
