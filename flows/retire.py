"""``retire-access-key``: retire one key without creating a new one (two active keys, or an unused key).

The same safe tail as a rotation: wait until the key has gone unused for the quiet period, deactivate it, and
delete it after the grace period; pausable, resumable and reversible (rollback reactivates it) the same way.
"""

from __future__ import annotations

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.exceptions import Pause
from prefect.runtime import deployment

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import Origin, RetirementRequest, check_quiet_period
from keyrotor.core.model import PauseKind, RotationState
from keyrotor.flows import refused, run_name
from keyrotor.settings import Settings
from keyrotor.tasks.keys import stop_waiting
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.pause import record_hold
from keyrotor.tasks.preflight import preflight
from keyrotor.tasks.report import following, show, tag_this_run
from keyrotor.tasks.retire import start_retirement
from keyrotor.tasks.rotation import retire_old_key
from keyrotor.tasks.wait import Waited, Watch, suspend_until_woken, wait_until_quiet


@flow(name="retire-access-key", flow_run_name=run_name("retire", key=True), persist_result=False)
def retire_access_key(request: RetirementRequest) -> RotationState | State:
    """Retire the request's key of the user, keeping the other key (if any).

    Args:
        request: The user, the key to retire and the key kept, the timings, and (for an unused key) how long it
            must still be unused.
    """
    try:
        return retire(request, Settings())
    except KeyrotorError as error:
        return refused(error)


def retire(request: RetirementRequest, settings: Settings) -> RotationState:
    """The procedure itself (see :func:`retire_access_key`)."""
    if not request.min_idle_days:  # a key retired for being unused has already shown it is unused
        origin = Origin.FORM if deployment.id is not None else Origin.CLI
        accepted = request.accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
        check_quiet_period(request.quiet_period, real_aws=settings.real_aws, accepted=accepted, origin=origin)
    ctx = following(preflight(request, settings, "retire"))
    tag_this_run(ctx)
    with rotation_lease(ctx) as leased:
        state = start_retirement(leased, request)
        waited = Waited(state)
        if not state.phase.terminal:
            try:
                continued = state.started_by != leased.actor  # recorded by an earlier run: it may have parked
                waited = wait_until_quiet(leased, state, Watch.old_key(state), continued)
            except Pause:
                record_hold(leased, PauseKind.PREFECT, "suspended from Prefect")
                raise
            if waited.at_deadline and waited.evidence is not None:
                stop_waiting(leased, state, waited.evidence.last_used)  # type: ignore[unused-coroutine]  # a NoReturn task reads as async
            state = waited.state if waited.parked else retire_old_key(leased, waited.state)
    if waited.parked is not None:
        show(ctx, state, working=False, wait=waited.parked)
        suspend_until_woken(ctx, waited.parked)
    return state
