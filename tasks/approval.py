"""The optional approval gate before the old key is deactivated: the run pauses with a form in the Prefect UI.

The form shows the last-used evidence. From a deployment the run is suspended (no process waits); started from
the command line, the process stays and waits. Approving continues; rejecting ends the rotation with both keys
active. A keyed pause fires once per rotation: after the resume the flow runs again from the top, reaches this
point again, and gets the answer given instead of pausing twice.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.exceptions import Pause
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment
from pydantic import Field

from keyrotor.core.model import LastUsed, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.pause import record_pause


class DeactivationApproval(RunInput):
    """What the operator answers in the Prefect UI (or with ``keyrotor resume USER --approve/--reject``)."""

    approve: bool = Field(default=False, description="Deactivate the old key now?")
    note: str = Field(default="", description="Why (kept in the rotation's state).")


def evidence_markdown(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> str:
    """The form's description: what is about to happen and the evidence that the old key is unused."""
    return (
        f"### Deactivate the old access key of `{ctx.user_name}`?\n\n"
        f"- old key: `{state.old_key_id}`, {last_used.describe()}\n"
        f"- new key: `{state.new_key_id}`, published to `{ctx.records.kv.mount}/{ctx.records.paths.secret}` "
        f"at {state.published_at.isoformat() if state.published_at else '?'}\n"
        f"- quiet period required: {state.timing('quiet_period')}\n\n"
        "Approve to deactivate it now (it is deleted after the grace period). "
        "Reject to stop here with both keys active."
    )


def ask_approval(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> DeactivationApproval:
    """Pause for the operator's answer.

    A run from a deployment is suspended with no timeout: it holds nothing and the question stays open until
    someone answers. A run started in a terminal has to keep its process, so it waits at most the rotation's
    max-wait, and fails if nobody answered by then (both keys stay active).
    """
    form = DeactivationApproval.with_initial_data(description=evidence_markdown(ctx, state, last_used), approve=False)
    key = f"approve-deactivation-{state.rotation_id}"
    get_run_logger().info("Waiting for approval to deactivate %s (answer in the Prefect UI)", state.old_key_id)
    if deployment.id is None:
        return pause_flow_run(wait_for_input=form, key=key, timeout=int(state.timing("max_wait").total_seconds()))
    try:
        return suspend_flow_run(wait_for_input=form, key=key, timeout=None)
    except Pause:
        record_pause(ctx, state, "awaiting approval to deactivate the old key")
        raise


@step("reject-rotation")
def reject_rotation(ctx: RotationContext, state: RotationState, note: str) -> RotationState:
    """End the rotation at the operator's word: both keys stay active, the new one stays in Vault."""
    get_run_logger().warning("Deactivation rejected%s; both keys stay active", f" ({note})" if note else "")
    return ctx.save(state.evolve(phase=Phase.REJECTED, completed_at=utcnow(), error=f"rejected by an operator: {note}"))
