"""``rotate-access-key``: rotate one IAM user's access key without breaking the applications that use it.

The procedure a careful person follows, each step safe to run again after a crash at any moment:
create a new key, verify it, publish it to Vault, wait until the old key has gone quiet, deactivate the old
key, and delete it when the grace period ends (a later flow run, so nothing waits through the grace period).

While the old key is still in use, a run from a deployment parks: it suspends itself and its process exits; the
waker resumes it once the key has been quiet long enough, and it runs again from the top, every step done.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.exceptions import Abort, Pause
from prefect.runtime import deployment

from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import Origin, RotationRequest, check_quiet_period
from keyrotor.core.model import PauseKind, Phase, RotationState
from keyrotor.flows import refused, rejected, run_name
from keyrotor.settings import Settings
from keyrotor.tasks.approval import ask_approval, record_answer
from keyrotor.tasks.keys import stop_waiting
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.pause import record_hold, stop_if_suspended
from keyrotor.tasks.preflight import preflight, start_rotation
from keyrotor.tasks.report import following, show, tag_this_run
from keyrotor.tasks.rotation import introduce_new_key, retire_old_key
from keyrotor.tasks.wait import Waited, Watch, clear_wait, suspend_until_woken, wait_until_quiet


@flow(name="rotate-access-key", flow_run_name=run_name("rotate"), persist_result=False, validate_parameters=True)
def rotate_access_key(request: RotationRequest) -> RotationState | State:
    """Rotate the user's access key, or continue the rotation in progress.

    Args:
        request: Who to rotate, in which account, how long to wait at each stage, and the operator's choices.
    """
    try:
        state = rotate(request, Settings())
    except KeyrotorError as error:
        return refused(error)
    return rejected(state) if state.phase is Phase.REJECTED else state


def rotate(request: RotationRequest, settings: Settings) -> RotationState:
    """The procedure itself (see :func:`rotate_access_key`)."""
    origin = Origin.FORM if deployment.id is not None else Origin.CLI
    accepted = request.accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
    check_quiet_period(request.quiet_period, real_aws=settings.real_aws, accepted=accepted, origin=origin)
    ctx = following(preflight(request, settings))
    tag_this_run(ctx)
    with rotation_lease(ctx) as leased:
        state = start_rotation(leased, request)
        if state.phase.terminal:
            return state
        continued = state.started_by != leased.actor  # recorded by an earlier run: it may have parked
        waited = Waited(state)
        try:
            if not state.phase.reached(Phase.PUBLISHED):
                state = introduce_new_key(leased, state)  # create, verify with STS, publish to Vault
            elif state.phase is Phase.PUBLISHED:
                leased.records.discard_stash()  # a run may have died between recording the publish and this
            if state.phase is not Phase.PUBLISHED or state.old_key_id is None:
                clear_wait(leased)
                waited = Waited(state)
            else:
                waited = wait_until_quiet(leased, state, Watch.old_key(state), continued)
            state = waited.state
            if waited.at_deadline and waited.evidence is not None:
                stop_waiting(leased, state, waited.evidence.last_used)  # type: ignore[unused-coroutine]  # Prefect reads a NoReturn task as async
            if waited.parked is None:
                if request.require_approval and waited.evidence is not None and state.phase is Phase.PUBLISHED:
                    answer = ask_approval(leased, state, waited.evidence.last_used)
                    state = record_answer(leased, state, answer)
                    if state.phase is Phase.REJECTED:
                        return state
                state = retire_old_key(leased, state)  # deactivate, then delete (grace period over) or schedule it
        except Pause:  # an operator paused the run (the UI's Pause) and Prefect stopped it at a step
            record_hold(leased, PauseKind.PREFECT, "suspended from Prefect")
            raise
        except Abort:  # Prefect refused to run the next task: the run was suspended meanwhile
            stop_if_suspended(leased, state)
            raise
    if waited.parked is not None:
        show(ctx, state, working=False, wait=waited.parked)
        suspend_until_woken(ctx, waited.parked)  # the process exits; the waker resumes the run
    get_run_logger().info("Rotation %s of %r: %s", state.rotation_id, request.user_name, state.phase.value)
    return state
