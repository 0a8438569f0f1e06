"""Waiting for a key to go quiet, without holding a process.

A rotation waits for its old key, a rollback for the new key it moves applications away from. A run from a
deployment looks at the key once. If applications still use it, the run *parks*: it writes when the next look is
due into Vault's waiting index, lets go of the lease, and suspends itself in Prefect (state "Waiting", no timeout),
so its process exits. The waker (:mod:`keyrotor.waker`) looks at every parked rotation's key when its check is
due, and resumes the run only once it can move on (quiet, or at the deadline); the resumed run starts again from
the top, finds every step done, looks once more and goes on.

A run that Prefect cannot suspend (started in process by ``keyrotor rotate`` without a served deployment) waits
in its process, polling; so does a run whose wait can end within ``KEYROTOR_PARK_AFTER`` (1m): waking a parked
run starts a new process, which a wait of seconds does not repay.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn

from prefect import get_run_logger
from prefect.runtime import deployment
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_fixed

from keyrotor.adapters.prefect_api import suspend_current_run, this_server
from keyrotor.core.decisions import QuietCheck, check_quiet
from keyrotor.core.durations import format_duration
from keyrotor.core.errors import AwsUnavailable, KeyrotorError, VaultUnavailable
from keyrotor.core.model import LastUsed, Look, PauseKind, Quiet, RotationState, Wait
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.pause import stop_if_suspended

PAUSE_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class Watch:
    """What a wait watches: a key, quiet since when, given up at when, and how people call it."""

    key_id: str
    since: datetime
    deadline: datetime
    subject: str  # "old key", "new key"

    @classmethod
    def old_key(cls, state: RotationState) -> Watch:
        assert state.old_key_id and state.published_at and state.wait_deadline
        return cls(state.old_key_id, state.published_at, state.wait_deadline, "old key")


@dataclass(frozen=True)
class KeyCheck:
    """One look at the watched key while waiting: the evidence and the decision."""

    last_used: LastUsed
    decision: QuietCheck


@dataclass(frozen=True)
class Waited:
    """How the wait ended for this run: quiet (with the evidence), at the deadline, nothing to wait for, or parked."""

    state: RotationState
    evidence: KeyCheck | None = None
    parked: Wait | None = None

    @property
    def at_deadline(self) -> bool:
        return self.evidence is not None and self.evidence.decision.outcome is Quiet.DEADLINE


def look_at(ctx: RotationContext, state: RotationState, watch: Watch) -> KeyCheck:
    """Read the watched key's last use and decide whether it has been quiet long enough.

    A plain function, not a task: a week's wait polls hundreds of times, and each poll is one read whose evidence
    goes to the run's log.
    """
    last_used = ctx.iam.last_used(watch.key_id)
    decision = check_quiet(
        since=watch.since,
        last_used=last_used,
        quiet_period=state.timings.quiet_period,
        poll_interval=state.timings.poll_interval,
        deadline=watch.deadline,
        now=utcnow(),
    )
    get_run_logger().info(
        "%s: %s -> %s", watch.subject.capitalize(), last_used.describe(), describe_check(decision, watch.since)
    )
    return KeyCheck(last_used, decision)


def describe_check(decision: QuietCheck, since: datetime) -> str:
    """One look's verdict in words that are true: quiet, used after ``since``, or simply not quiet long enough."""
    if decision.outcome is Quiet.QUIET:
        return "quiet for the whole quiet period"
    if decision.outcome is Quiet.DEADLINE:
        return "still in use at the deadline"
    if decision.in_use_since(since):
        return f"still in use (used after {since.isoformat(timespec='seconds')})"
    return f"not used since {since.isoformat(timespec='seconds')}, but not yet for the whole quiet period"


def wait_until_quiet(ctx: RotationContext, state: RotationState, watch: Watch, continued: bool = True) -> Waited:
    """Look at the watched key until it has been quiet for the quiet period; park instead of polling when the run
    can be suspended. Returns at the deadline too (``at_deadline``): the caller stops with both keys active.

    A look that fails (AWS or Vault unreachable) is a missed look, tried again after a poll interval until the
    deadline. ``continued``: the rotation was recorded before this run (it may have parked, and left a waiting
    record to drop once it moves on); a rotation this run started has none, which saves a Vault call per rotation.
    """
    while True:
        check = _look_through_outages(ctx, state, watch)
        if check.decision.outcome is not Quiet.WAIT:
            if continued:
                clear_wait(ctx)
            return Waited(state, evidence=check)
        if can_park(ctx) and check.decision.worth_parking(utcnow(), ctx.settings.park_after):
            return Waited(state, parked=park(ctx, state, watch, check))
        assert check.decision.next_check_at is not None
        _sleep_watching_for_pause(ctx, state, check.decision.next_check_at)


def _look_through_outages(ctx: RotationContext, state: RotationState, watch: Watch) -> KeyCheck:
    """:func:`look_at`, looked at again every poll interval while AWS or Vault is down, until the deadline."""

    def missed(error: BaseException) -> bool:
        return isinstance(error, AwsUnavailable | VaultUnavailable) and utcnow() < watch.deadline

    def say(retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        poll = format_duration(state.timings.poll_interval)
        get_run_logger().warning("Missed a look at the %s (%s); looking again in %s", watch.subject, error, poll)

    retrying = Retrying(
        retry=retry_if_exception(missed),
        wait=wait_fixed(state.timings.poll_interval.total_seconds()),
        stop=stop_never,
        before_sleep=say,
        sleep=lambda seconds: _sleep_watching_for_pause(ctx, state, utcnow() + _seconds(seconds)),
        reraise=True,
    )
    return retrying(look_at, ctx, state, watch)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _sleep_watching_for_pause(ctx: RotationContext, state: RotationState, until: datetime) -> None:
    while (remaining := (until - utcnow()).total_seconds()) > 0:
        ctx.sleep(min(remaining, PAUSE_CHECK_SECONDS))
        stop_if_suspended(ctx, state)


def can_park(ctx: RotationContext) -> bool:
    """Only a flow run of a deployment (not a subflow) can be suspended and started again by Prefect."""
    return ctx.settings.park_waits and ctx.flow_run_id is not None and deployment.id is not None


def park(ctx: RotationContext, state: RotationState, watch: Watch, check: KeyCheck) -> Wait:
    """Record in Vault's waiting index when the key is to be looked at next (the run still holds the lease)."""
    assert ctx.flow_run_id is not None and check.decision.next_check_at is not None
    now = utcnow()
    wait = Wait(
        rotation_id=state.rotation_id,
        user_name=ctx.user_name,
        account_id=ctx.account_id,
        flow_run_id=ctx.flow_run_id,
        wait_id=f"wait-{uuid.uuid4().hex[:12]}",
        key_id=watch.key_id,
        since=watch.since,
        quiet_period=state.timings.quiet_period,
        poll_interval=state.timings.poll_interval,
        wait_deadline=watch.deadline,
        next_check_at=check.decision.next_check_at,
        parked_at=now,
        last_check=Look(now, check.last_used, check.decision.outcome),
        prefect_api=this_server(),
    )
    index = ctx.waiting
    current = index.read(ctx.account_id, ctx.user_name)
    parked = index.write(replace(wait, version=current.version if current else 0))
    get_run_logger().info(
        "Parked: the run is suspended (state Waiting, holding no process) until the next look at the %s at %s "
        "(every %s; gives up at %s)",
        watch.subject,
        parked.next_check_at.isoformat(timespec="seconds"),
        format_duration(state.timings.poll_interval),
        watch.deadline.isoformat(timespec="seconds"),
    )
    return parked


def suspend_until_woken(ctx: RotationContext, wait: Wait) -> NoReturn:
    """Suspend this run (no timeout) so its process exits; the waker resumes it. Raises Prefect's ``Pause``.

    Call it after the lease is released. If an operator paused the run meanwhile (the UI's Pause), Prefect refuses
    the suspension with the operator's pause, which is recorded as a hold before ``Pause`` propagates.
    """
    from prefect.exceptions import Pause

    from keyrotor.tasks.pause import record_hold

    assert ctx.flow_run_id is not None
    try:
        suspended = suspend_current_run(ctx.flow_run_id, wait.wait_id)
    except Pause:
        record_hold(ctx, PauseKind.PREFECT, "suspended from Prefect")
        raise
    raise Pause(state=suspended)


def clear_wait(ctx: RotationContext) -> None:
    """The rotation stopped waiting (moved on, ended, or never waited): drop its record from the waiting index."""
    try:
        ctx.waiting.remove(ctx.account_id, ctx.user_name)
    except KeyrotorError as error:  # the waker drops a record whose run moved on: a leftover is harmless
        get_run_logger().warning("Could not drop the waiting record: %s", error)
