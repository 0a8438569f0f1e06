"""The optional approval gate before the old key is deactivated: the run pauses with a form in the Prefect UI.

The form shows the last-used evidence and asks for an explicit answer (approve or reject: no default decides),
a note and who answers. From a deployment the run is suspended (no process waits); started from the command line,
the process stays and waits. The answer, the note, who gave it and when are kept in the rotation's state and
log. Approving continues; rejecting ends the rotation with both keys active, and the run ends "Rejected", not as
a success. A keyed pause fires once per rotation: after the resume the flow runs again from the top, reaches this
point again, and gets the answer given instead of pausing twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from prefect import get_run_logger
from prefect.exceptions import Pause
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment
from pydantic import Field

from keyrotor.control.consumers import rotation_consumers
from keyrotor.core.durations import format_duration
from keyrotor.core.model import Answer, Approval, LastUsed, PauseKind, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.pause import record_pause

#: Who answered, when the form's field was left empty (Prefect's open-source server does not know its users).
SOMEONE_IN_THE_UI = "someone in the Prefect UI"


class DeactivationApproval(RunInput):
    """What the operator answers in the Prefect UI (or with ``keyrotor resume USER --approve/--reject``)."""

    # A Literal, not the Answer enum: the UI's form lists a choice's options only when they are written in place.
    answer: Literal["approve", "reject"] = Field(
        description="approve: deactivate the old key now; reject: stop with both keys active."
    )
    note: str = Field(default="", max_length=2000, description="Why (kept in the rotation's state and log).")
    answered_by: str = Field(default="", max_length=200, description="Your name (kept with the answer).")


def evidence_markdown(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> str:
    """The form's description: what is about to happen and the evidence that the old key is unused."""
    used = "never used" if last_used.used_at is None else f"last used {last_used.used_at.isoformat(timespec='seconds')}"
    if last_used.used_at is not None:
        used += f" by {last_used.service or '?'} in {last_used.region or '?'}"
    published = state.published_at.isoformat(timespec="seconds") if state.published_at else "?"
    found = None if ctx.trail is None else rotation_consumers(ctx.trail, ctx.settings.trail_regions, state, last_used)
    consumers = f"- consumers (CloudTrail): {found.describe()}\n" if found else ""
    return (
        f"### Deactivate the old access key of `{ctx.user_name}`?\n\n"
        f"- old key: `{state.old_key_id}`, {used}\n"
        f"- new key: `{state.new_key_id}`, published to `{ctx.records.kv.mount}/{ctx.records.paths.secret}` "
        f"at {published}\n"
        f"{consumers}"
        f"- quiet period required: {format_duration(state.timings.quiet_period)}\n\n"
        "Choose **approve** to deactivate it now (it is deleted after the grace period), or **reject** to stop "
        "here with both keys active."
    )


def ask_approval(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> DeactivationApproval:
    """Pause for the operator's answer.

    A run from a deployment is suspended with no timeout: it holds nothing and the question stays open until
    someone answers. A run started in a terminal has to keep its process, so it waits at most the rotation's
    max-wait, and fails if nobody answered by then (both keys stay active).
    """
    form = DeactivationApproval.with_initial_data(description=evidence_markdown(ctx, state, last_used))
    key = f"approve-deactivation-{state.rotation_id}"
    get_run_logger().info("Waiting for approval to deactivate %s (answer in the Prefect UI)", state.old_key_id)
    if deployment.id is None:
        return pause_flow_run(wait_for_input=form, key=key, timeout=int(state.timings.max_wait.total_seconds()))
    try:
        return suspend_flow_run(wait_for_input=form, key=key, timeout=None)
    except Pause:
        record_pause(ctx, state, PauseKind.APPROVAL, "awaiting approval to deactivate the old key")
        raise


@step("record-answer")
def record_answer(ctx: RotationContext, state: RotationState, answer: DeactivationApproval) -> RotationState:
    """Keep the answer in the rotation's state and log; a rejection ends the rotation with both keys active."""
    approval = Approval(Answer(answer.answer), answer.note, answer.answered_by or SOMEONE_IN_THE_UI, utcnow())
    note = f": {approval.note}" if approval.note else ""
    logger = get_run_logger()
    if approval.answer is Answer.APPROVE:
        logger.info("Deactivation approved by %s at %s%s", approval.answered_by, approval.answered_at, note)
        return ctx.save(replace(state, approval=approval))
    logger.warning(
        "Deactivation rejected by %s at %s%s; both keys stay active", approval.answered_by, approval.answered_at, note
    )
    error = f"rejected by {approval.answered_by}" + note
    return ctx.save(replace(state, phase=Phase.REJECTED, approval=approval, completed_at=utcnow(), error=error))
