"""``retire-access-key``: retire one key without creating a new one (two active keys, or an unused key).

The same safe tail as a rotation: wait until the key has gone unused for the quiet period, deactivate it, and
delete it after the grace period; pausable, resumable and reversible (rollback reactivates it) the same way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.exceptions import Pause

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import check_quiet_period, check_user_name, resolve_timings
from keyrotor.flows import refused, run_name
from keyrotor.settings import Settings
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.pause import record_hold
from keyrotor.tasks.preflight import preflight
from keyrotor.tasks.report import publish_rotation, tag_this_run
from keyrotor.tasks.retire import start_retirement
from keyrotor.tasks.rotation import retire_old_key
from keyrotor.tasks.wait import Waited, suspend_until_woken, wait_until_old_key_is_quiet


@flow(name="retire-access-key", flow_run_name=run_name("retire", key=True), persist_result=False)
def retire_access_key(
    user_name: str,
    key_id: str,
    keep_key_id: str | None = None,
    min_idle_days: int | None = None,
    quiet_period: str | None = None,
    poll_interval: str | None = None,
    max_wait: str | None = None,
    grace_period: str | None = None,
    accept_unsafe_quiet_period: bool = False,
    account_id: str | None = None,
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
        accept_unsafe_quiet_period: Allow a quiet period that cannot show the key unused (see rotate-access-key);
            a key retired for being unused (``min_idle_days``) has already shown it.
        account_id: The AWS account of the user; default: the account of keyrotor's own credentials.
    """
    try:
        check_user_name(user_name)
        settings = Settings()
        durations = (quiet_period, poll_interval, max_wait, grace_period)
        timings = resolve_timings(settings, *durations)
        if min_idle_days is None:
            accepted = accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
            check_quiet_period(timings.quiet_period, real_aws=settings.real_aws, accepted=accepted)
        overridden = any(value is not None for value in durations)
        min_idle = timedelta(days=min_idle_days) if min_idle_days is not None else None
        ctx = preflight(user_name, settings, account_id, "retire")
        tag_this_run(ctx)
        with rotation_lease(ctx) as leased:
            state = start_retirement(leased, timings, overridden, key_id, keep_key_id, min_idle)
            waited = Waited(state)
            if not state.phase.terminal:
                try:
                    continued = state.started_by != leased.actor  # recorded by an earlier run: it may have parked
                    waited = wait_until_old_key_is_quiet(leased, state, continued)
                except Pause:
                    record_hold(leased, "suspended from Prefect")
                    raise
                state = waited.state if waited.parked else retire_old_key(leased, waited.state)
        if waited.parked is not None:
            publish_rotation(ctx, state, waiting=waited.parked)
            suspend_until_woken(ctx, waited.parked)
        publish_rotation(ctx, state)
    except KeyrotorError as error:
        return refused(error)
    return state.report()
