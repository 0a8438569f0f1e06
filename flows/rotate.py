"""``rotate-access-key``: rotate one IAM user's access key without breaking the applications that use it.

The procedure a careful person follows, each step safe to run again after a crash at any moment:
create a new key, verify it, publish it to Vault, wait until the old key has gone quiet, deactivate the old
key, and delete it when the grace period ends (a later flow run, so nothing waits through the grace period).

While the old key is still in use, a run from a deployment parks: it suspends itself and its process exits; the
waker resumes it once the key has been quiet long enough, and it runs again from the top, every step done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.exceptions import Abort, Pause

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import check_quiet_period, check_user_name, resolve_timings
from keyrotor.core.model import Phase
from keyrotor.flows import refused, run_name
from keyrotor.settings import Settings
from keyrotor.tasks.approval import ask_approval, reject_rotation
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.pause import record_hold, stop_if_suspended
from keyrotor.tasks.preflight import preflight, start_rotation
from keyrotor.tasks.report import publish_rotation, tag_this_run
from keyrotor.tasks.rotation import introduce_new_key, retire_old_key
from keyrotor.tasks.wait import suspend_until_woken, wait_until_old_key_is_quiet


@flow(name="rotate-access-key", flow_run_name=run_name("rotate"), persist_result=False, validate_parameters=True)
def rotate_access_key(
    user_name: str,
    quiet_period: str | None = None,
    poll_interval: str | None = None,
    max_wait: str | None = None,
    grace_period: str | None = None,
    require_approval: bool = False,
    accept_unsafe_quiet_period: bool = False,
    force: bool = False,
    account_id: str | None = None,
) -> dict[str, Any] | State:
    """Rotate ``user_name``'s access key, or continue the rotation in progress.

    Args:
        user_name: The IAM user.
        quiet_period: How long the old key must go unused after the publish (e.g. "1d"); default from settings.
        poll_interval: How often to check the old key's last use while waiting (e.g. "15m").
        max_wait: Stop waiting after this long, leaving both keys active (e.g. "7d").
        grace_period: Keep the deactivated old key this long before deleting it (e.g. "7d"; "0s" deletes at once).
        require_approval: Before deactivating, pause with the last-used evidence until an operator approves.
        accept_unsafe_quiet_period: Allow a quiet period of 0s, or on real AWS one shorter than its 4h last-used lag.
        force: Rotate even if keyrotor's last rotation created the current key moments ago.
        account_id: The AWS account of the user (a member account is entered through KEYROTOR_ROLE_NAME); default:
            the account of keyrotor's own credentials.
    """
    try:
        options = RotationOptions(require_approval, accept_unsafe_quiet_period, force, account_id)
        return rotate(user_name, quiet_period, poll_interval, max_wait, grace_period, options=options)
    except KeyrotorError as error:
        return refused(error)


@dataclass(frozen=True)
class RotationOptions:
    """The operator's choices for one rotation besides its timings."""

    require_approval: bool = False
    accept_unsafe_quiet_period: bool = False
    force: bool = False
    account_id: str | None = None


def rotate(user_name: str, *durations: str | None, options: RotationOptions = RotationOptions()) -> dict[str, Any]:
    """The procedure itself (see :func:`rotate_access_key`)."""
    check_user_name(user_name)
    settings = Settings()
    timings = resolve_timings(settings, *durations)
    accepted = options.accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
    check_quiet_period(timings.quiet_period, real_aws=settings.real_aws, accepted=accepted)
    overridden = any(value is not None for value in durations)
    ctx = preflight(user_name, settings, options.account_id)
    tag_this_run(ctx)
    with rotation_lease(ctx) as leased:
        state = start_rotation(leased, timings, overridden, options.force)
        if state.phase.terminal:
            return state.report()
        continued = state.started_by != leased.actor  # recorded by an earlier run: it may have parked
        try:
            if not state.phase.reached(Phase.PUBLISHED):
                state = introduce_new_key(leased, state)  # create, verify with STS, publish to Vault
            elif state.phase is Phase.PUBLISHED:
                leased.records.discard_stash()  # a run may have died between recording the publish and this
            waited = wait_until_old_key_is_quiet(leased, state, continued)
            state = waited.state
            if waited.parked is None:
                if options.require_approval and waited.evidence is not None and state.phase is Phase.PUBLISHED:
                    answer = ask_approval(leased, state, waited.evidence)
                    if not answer.approve:
                        state = reject_rotation(leased, state, answer.note)
                        publish_rotation(leased, state)
                        return state.report()
                state = retire_old_key(leased, state)  # deactivate, then delete (grace period over) or schedule it
        except Pause:  # an operator paused the run (the UI's Pause) and Prefect stopped it at a step
            record_hold(leased, "suspended from Prefect")
            raise
        except Abort:  # Prefect refused to run the next task: the run was suspended meanwhile
            stop_if_suspended(leased, state)
            raise
        except KeyrotorError:
            publish_rotation(leased, leased.records.load_state() or state)
            raise
    if waited.parked is not None:
        publish_rotation(ctx, state, waiting=waited.parked)
        suspend_until_woken(ctx, waited.parked)  # the process exits; the waker resumes the run
    get_run_logger().info("Rotation %s of %r: %s", state.rotation_id, user_name, state.phase.value)
    publish_rotation(ctx, state)
    return state.report()
