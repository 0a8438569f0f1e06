"""What a rotation shows in the Prefect UI besides its logs: tags that say whose it is, and a markdown artifact.

The artifact has one key per user, so the latest version is always at hand in the UI's Artifacts page and on the
run. Both are best effort: a rotation never fails because the UI could not be told about it.
"""

from __future__ import annotations

import hashlib
import re

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from keyrotor.adapters.prefect_api import add_tags, prefect_call
from keyrotor.core.errors import PrefectUnavailable
from keyrotor.core.model import RotationState, Wait
from keyrotor.core.outlook import outlook, rotation_markdown
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks.context import RotationContext


def user_tags(user_name: str, account_id: str | None = None) -> list[str]:
    """The tags of every flow run acting on a user: filter the UI's run list by them."""
    return [f"user:{user_name}", *([f"account:{account_id}"] if account_id else [])]


def artifact_key(user_name: str, account_id: str) -> str:
    """``rotation-<account>-<user>-<hash>``: Prefect keys allow lowercase letters, digits and dashes only; the hash
    keeps two names that differ only in the characters replaced apart."""
    slug = re.sub(r"[^a-z0-9]+", "-", user_name.lower()).strip("-")[:40]
    digest = hashlib.sha256(f"{account_id}/{user_name}".encode()).hexdigest()[:6]
    return f"rotation-{account_id}-{slug}-{digest}"


def tag_this_run(ctx: RotationContext) -> None:
    """Tag the current flow run with its user, if whoever created it did not (a run started from the UI)."""
    if ctx.flow_run_id is None:
        return
    try:
        add_tags(ctx.flow_run_id, list(flow_run.get_tags()), user_tags(ctx.user_name, ctx.account_id))
    except PrefectUnavailable as error:
        get_run_logger().warning("Could not tag the flow run: %s", error)


def publish_rotation(ctx: RotationContext, state: RotationState, waiting: Wait | None = None) -> None:
    """Publish the rotation's markdown artifact (where it is, keys, evidence, timeline, what happens next); for a
    parked rotation, ``waiting`` says when the waker looks next."""
    next_check = waiting.next_check_at if waiting is not None else None
    view = outlook(state, ctx.user_name, utcnow(), next_check_at=next_check)
    try:
        with prefect_call("publish the rotation's artifact"):
            create_markdown_artifact(
                key=artifact_key(ctx.user_name, ctx.account_id),
                markdown=rotation_markdown(state, view),
                description=f"{state.kind} of {ctx.user_name}: {state.phase.value}",
            )
    except PrefectUnavailable as error:
        get_run_logger().warning("Could not publish the rotation's artifact: %s", error)
