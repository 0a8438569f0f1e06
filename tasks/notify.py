"""Tell a rotation's owner what happened, once: the notice a saved state calls for, as a Prefect event.

Best effort, like the view in the UI: a rotation never fails because a notice could not be sent. The kinds sent
are recorded in the rotation's state, and the event's id is fixed per rotation and kind, so a run restarted from
the top sends nothing twice (see :mod:`keyrotor.core.notices`).
"""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger

from keyrotor.adapters.notifications import emit, wanted
from keyrotor.control.consumers import rotation_consumers
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.model import RotationState
from keyrotor.core.notices import Notice, notice_event, notice_for
from keyrotor.core.outlook import outlook
from keyrotor.tasks.context import RotationContext


def notify(ctx: RotationContext, state: RotationState) -> RotationState:
    """Send the notice ``state`` calls for, if it was not sent yet; returns the state as now saved."""
    notice = notice_for(state)
    if notice is None or notice.value in state.notified:
        return state
    try:
        asked = wanted()
        if asked is None or notice.value not in asked.notices:
            return state  # nobody asked for it: no event, no call
        owner = ctx.iam.user_tags(ctx.user_name).get(asked.owner_tag) or ctx.settings.owner_fallback
        event = notice_event(
            notice,
            state,
            owner=owner,
            command=outlook(state, state.user_name).command,
            detail=detail(ctx, notice, state),
        )
        emit(event)
        return ctx.records.save_state(replace(state, notified=(*state.notified, notice.value)), ctx.actor)
    except (KeyrotorError, OSError, RuntimeError, ValueError) as error:
        get_run_logger().warning("Could not send the %s notice of %r: %s", notice.value, ctx.user_name, error)
        return state


def detail(ctx: RotationContext, notice: Notice, state: RotationState) -> str:
    """What the headline cannot say: why it stopped (with the consumers still on the old key), or who moved."""
    if notice is Notice.STOPPED_AT_DEADLINE:
        return state.halted or ""
    if notice is Notice.AWAITING_APPROVAL and ctx.trail is not None:
        found = rotation_consumers(ctx.trail, ctx.settings.trail_regions, state)
        return f"Consumers (CloudTrail): {found.describe()}" if found else ""
    return ""
