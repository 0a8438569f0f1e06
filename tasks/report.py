"""What a rotation shows in the Prefect UI besides its logs: tags that say whose it is, and its view as an artifact,
published again on every change the run makes (see :mod:`keyrotor.control.view`).

Both are best effort: a rotation never fails because the UI could not be told about it.
"""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger
from prefect.runtime import flow_run

from keyrotor.adapters.prefect_api import add_tags
from keyrotor.adapters.prefect_runs import PrefectRuns
from keyrotor.control.view import publish_view, view_of
from keyrotor.core.errors import PrefectUnavailable
from keyrotor.core.model import LeaseData, RotationState, Wait
from keyrotor.core.naming import user_tags
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.notify import notify

#: The lease as a run that holds it sees it: the view then says a run is working on the rotation.
_HELD = LeaseData(owner="this run", expires_at=None)


def tag_this_run(ctx: RotationContext) -> None:
    """Tag the current flow run with its user, if whoever created it did not (a run started from the UI)."""
    tag_run(ctx.user_name, ctx.account_id)


def tag_run(user_name: str, account_id: str) -> None:
    """Tag the current flow run (if any) ``user:<name>`` and ``account:<id>``, so the UI lists a user's history."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    try:
        add_tags(str(run_id), list(flow_run.get_tags()), user_tags(user_name, account_id))
    except PrefectUnavailable as error:
        get_run_logger().warning("Could not tag the flow run: %s", error)


def show(ctx: RotationContext, state: RotationState, *, working: bool, wait: Wait | None = None) -> None:
    """Publish the rotation's view: while the run works on it (``working``: it holds the lease), or once it let go
    (parked with ``wait``, or ended)."""
    now = utcnow()
    lease = replace(_HELD, expires_at=now + ctx.settings.lease_ttl) if working else None
    publish_view(PrefectRuns(), view_of(ctx.user_name, ctx.account_id, state, wait, lease, now))


def following(ctx: RotationContext) -> RotationContext:
    """``ctx``, publishing the rotation's view after every state it saves, and sending the notice a state calls
    for (once per rotation)."""

    def after_save(saver: RotationContext, state: RotationState) -> RotationState:
        show(saver, state, working=saver.lease is not None)
        return notify(saver, state)

    return replace(ctx, on_saved=after_save)
