"""``rollback-rotation``: return a user to the old key, the way back when an application breaks after a rotation,
without refusing a single application's call.

The old key is made Active and its secret restored in Vault at once. The new key stays Active until it has gone
unused for the quiet period (parked and woken exactly as a rotation's wait, holding nothing), so applications that
already moved to it keep working until they re-read Vault; then it is deactivated, and deleted after the grace
period. ``now`` deactivates it at once, for a key that must stop working (a leak).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NoReturn

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.exceptions import Abort, Pause

from keyrotor.core.errors import KeyrotorError, StillInUse
from keyrotor.core.inputs import RollbackRequest
from keyrotor.core.model import LastUsed, PauseKind, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.flows import refused, run_name
from keyrotor.settings import Settings
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.lease import rotation_lease
from keyrotor.tasks.pause import record_hold, stop_if_suspended
from keyrotor.tasks.preflight import load_rotation, preflight
from keyrotor.tasks.report import following, show, tag_this_run
from keyrotor.tasks.rollback import new_key_needs_wait, restore_old_key, retire_new_key, start_rollback
from keyrotor.tasks.wait import Waited, Watch, suspend_until_woken, wait_until_quiet

PAUSE_FIRST = (
    "pause it first, then roll back: `keyrotor pause {user}` (or Pause in the Prefect UI) for a run from a "
    "deployment; Ctrl-C in the terminal running `keyrotor rotate {user}`"
)


@flow(name="rollback-rotation", flow_run_name=run_name("roll back"), persist_result=False, validate_parameters=True)
def rollback_rotation(request: RollbackRequest) -> RotationState | State:
    """Return the user to the old key (see the module's docstring). Works in every phase until the old key is
    deleted; after that it says so and changes nothing. Running it again, or again after an interruption, ends in
    the same state.
    """
    try:
        return roll_back(request, Settings())
    except KeyrotorError as error:
        return refused(error)


def roll_back(request: RollbackRequest, settings: Settings) -> RotationState:
    """The procedure itself (see :func:`rollback_rotation`)."""
    ctx = following(preflight(request, settings, "rollback"))
    tag_this_run(ctx)
    with rotation_lease(ctx, busy_hint=PAUSE_FIRST.format(user=request.user_name)) as leased:
        state = start_rollback(leased, load_rotation(leased), request.now)
        waited = Waited(state)
        try:
            if state.phase is Phase.ROLLING_BACK:
                state = restore_old_key(leased, again_after_deadline(leased, state))
                waited = Waited(state)
                if new_key_needs_wait(leased, state):
                    waited = wait_until_quiet(leased, state, new_key_watch(state))
                    if waited.at_deadline and waited.evidence is not None:
                        stop_rollback_wait(leased, state, waited.evidence.last_used)  # type: ignore[unused-coroutine]  # a NoReturn task reads as async
                if waited.parked is None:
                    state = retire_new_key(leased, state)
        except Pause:
            record_hold(leased, PauseKind.PREFECT, "suspended from Prefect")
            raise
        except Abort:
            stop_if_suspended(leased, state)
            raise
    if waited.parked is not None:
        show(ctx, state, working=False, wait=waited.parked)
        suspend_until_woken(ctx, waited.parked)
    return state


def new_key_watch(state: RotationState) -> Watch:
    """The rollback's wait: the new key, quiet since the old key was restored."""
    rollback = state.rollback
    assert rollback is not None and rollback.restored_at and rollback.wait_deadline and state.new_key_id
    return Watch(state.new_key_id, rollback.restored_at, rollback.wait_deadline, "new key")


def again_after_deadline(ctx: RotationContext, state: RotationState) -> RotationState:
    """A rollback that stopped at its wait deadline waits again, with a fresh deadline, when run again."""
    if not state.halted or state.rollback is None:
        return state
    deadline = utcnow() + state.timings.max_wait
    return ctx.save(replace(state, halted=None, rollback=replace(state.rollback, wait_deadline=deadline)))


@step("stop-rollback-wait")
def stop_rollback_wait(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> NoReturn:
    """At the deadline, with the new key still in use: record the evidence, leave both keys active, stop."""
    message = (
        f"new key {state.new_key_id} was still in use at the rollback's deadline: {last_used.describe()}. The old "
        f"key {state.old_key_id} is active and in Vault; the new key stays active too. Find the application still "
        f"using it, then run `keyrotor rollback {ctx.user_name}` to keep waiting, or `keyrotor rollback "
        f"{ctx.user_name} --now` to deactivate it anyway (that application is then refused)"
    )
    ctx.save(replace(state, halted=message, last_used=last_used))
    raise StillInUse(message)
