"""What a rotation is doing, who or what it waits for, and the one command that moves it on. Pure: no I/O.

``keyrotor status``, ``keyrotor fleet-status`` and the rotation's artifact in the Prefect UI all render it from the
same records (the rotation's state and its waiting record) with these functions, so they say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyrotor.core.durations import format_duration
from keyrotor.core.model import Answer, PauseKind, Phase, RotationState, Wait

_PAST = {Answer.APPROVE: "approved", Answer.REJECT: "rejected"}


@dataclass(frozen=True)
class Outlook:
    """A rotation seen by an operator.

    Attributes:
        doing: What the rotation is doing (or how it ended), in a sentence.
        waiting_for: Who or what it waits for, and until when; "nothing" when it needs nobody.
        command: The one command that moves it on; empty when nothing needs doing.
        needs_person: True when it stays where it is until an operator acts.
        status: One or two words for counting (fleet-status): the phase, or what a waiting rotation does.
    """

    doing: str
    waiting_for: str
    command: str = ""
    needs_person: bool = False
    status: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "doing": self.doing,
            "waiting_for": self.waiting_for,
            "command": self.command,
            "needs_person": self.needs_person,
            "status": self.status,
        }


def outlook(
    state: RotationState | None,
    user: str,
    *,
    run_alive: bool = False,
    wait: Wait | None = None,
) -> Outlook:
    """Describe ``user``'s rotation, from its records alone (never from the clock: the artifact rendered when a
    record changed must still say the same as ``keyrotor status`` an hour later).

    Args:
        state: The durable record, None when there is none.
        user: The IAM user (for the commands).
        run_alive: A run holds the rotation's lease right now (it is working, or waiting in its process).
        wait: The rotation's record in the waiting index, when it is parked (a record of another rotation is
            ignored).
    """
    if state is None:
        return Outlook("no rotation recorded", "nothing", f"keyrotor rotate {user}", status="none")
    parked = wait if wait is not None and wait.rotation_id == state.rotation_id else None
    view = _describe(state, user, run_alive, parked)
    return (
        view
        if view.status
        else Outlook(view.doing, view.waiting_for, view.command, view.needs_person, _status(state, parked))
    )


def _status(state: RotationState, wait: Wait | None) -> str:
    if state.phase.terminal:
        return state.phase.value.replace("_", " ")
    if state.pause is not None:
        return "awaiting approval" if state.pause.kind is PauseKind.APPROVAL else "paused"
    if state.halted:
        return "stopped at deadline"
    if state.phase is Phase.ROLLING_BACK:
        return "rolling back"
    if state.phase is Phase.PUBLISHED:
        return "waiting" if wait is not None else "waiting (in a process)"
    if state.phase is Phase.DEACTIVATED:
        return "grace period"
    return state.phase.value


def _describe(state: RotationState, user: str, run_alive: bool, wait: Wait | None) -> Outlook:
    old, new = state.old_key_id or "(none)", state.new_key_id or "(none)"
    if state.phase is Phase.ROLLING_BACK:
        return _rolling_back(state, user, old, new, run_alive, wait)
    if state.phase.terminal:
        return _ended(state, user, old, new)
    if state.pause is not None:
        pause = state.pause
        if pause.kind is PauseKind.APPROVAL:
            return Outlook(
                f"paused since {_at(pause.at)}: {pause.reason} (flow run {pause.run_id}); holds no process",
                "an operator's approval to deactivate the old key (approve or reject in the run's form)",
                f"keyrotor resume {user} --approve (or --reject)",
                needs_person=True,
            )
        by = "from the Prefect UI" if pause.kind is PauseKind.PREFECT else "by an operator"
        return Outlook(
            f"paused {by} since {_at(pause.at)}: {pause.reason} (flow run {pause.run_id}); holds no process",
            "an operator to resume it",
            f"keyrotor resume {user}",
            needs_person=True,
        )
    if state.halted:
        return Outlook(
            f"stopped: {state.halted}",
            "an operator: find the application still using the old key",
            f"keyrotor rotate {user} (keeps waiting) or keyrotor rollback {user}",
            needs_person=True,
        )
    if state.phase is Phase.PUBLISHED:
        return _waiting(state, user, new, run_alive, wait)
    if state.phase is Phase.DEACTIVATED:
        doing = f"old key {old} is inactive since {_at(state.deactivated_at)} (grace period)"
        if state.deletion_run_id:
            return Outlook(
                doing,
                f"the grace period to end at {_at(state.delete_after)} (scheduled run {state.deletion_run_id} deletes "
                "it then); rollback is possible until then",
            )
        return Outlook(
            doing,
            f"its deletion from {_at(state.delete_after)} (no run scheduled: `keyrotor finish {user}` then, or the "
            "hourly finish-due-deletions); rollback is possible until then",
            f"keyrotor finish {user} (from {_at(state.delete_after)})",
        )
    if run_alive:
        return Outlook(f"introducing the new key (phase {state.phase.value})", "the run working on it")
    return Outlook(
        f"interrupted in phase {state.phase.value!r}: no run is working on it",
        "an operator to continue it",
        f"keyrotor rotate {user} (continues it) or keyrotor rollback {user}",
        needs_person=True,
    )


def _ended(state: RotationState, user: str, old: str, new: str) -> Outlook:
    if state.phase is Phase.COMPLETED:
        what = f"old key {old} deleted" if state.old_key_id else f"new key {new} created"
        return Outlook(f"{state.kind.value} completed at {_at(state.completed_at)}: {what}", "nothing")
    if state.phase is Phase.ROLLED_BACK:
        return _rolled_back(state, user, old, new)
    if state.phase is Phase.REJECTED:
        return Outlook(
            f"stopped: {state.error}; both keys are active and Vault names the new key {new}",
            "an operator",
            f"keyrotor rollback {user} (back to the old key) or deactivate {old} yourself",
            needs_person=True,
        )
    return Outlook(
        f"failed: {state.error}",
        "nothing: the old key was left as it was",
        f"keyrotor rotate {user} (starts a new rotation)",
    )


def _rolled_back(state: RotationState, user: str, old: str, new: str) -> Outlook:
    rollback = state.rollback
    back = f"rolled back at {_at(rollback.restored_at if rollback else state.completed_at)}"
    if rollback is not None and rollback.new_key_kept:
        return Outlook(
            f"{back}: old key {old} is active again; Vault had no secret before the rotation, so it still names the "
            f"new key {new}, which stays active",
            "an operator: deactivate the new key once nothing uses it, or rotate again",
            f"keyrotor rotate {user} --force",
            needs_person=True,
        )
    if state.retirement:
        return Outlook(f"{back}: key {old} is active again", "nothing", f"keyrotor rotate {user}")
    doing = f"{back}: old key {old} is active and in Vault again"
    if rollback is None or rollback.new_key_deleted_at is not None:
        deleted = f" (deleted at {_at(rollback.new_key_deleted_at)})" if rollback else ""
        return Outlook(doing + f"; new key {new} gone{deleted}", "nothing", _rotate_again(user))
    doing += f"; new key {new} inactive since {_at(rollback.new_key_deactivated_at)}"
    if rollback.delete_after is None:
        return Outlook(doing, "nothing", _rotate_again(user))
    run = f"scheduled run {rollback.deletion_run_id}" if rollback.deletion_run_id else "no run scheduled"
    return Outlook(
        doing + f", deleted after {_at(rollback.delete_after)} ({run})",
        "nothing",
        _rotate_again(user),
    )


def _rotate_again(user: str) -> str:
    return f"keyrotor rotate {user} (when the application that broke is fixed)"


def _rolling_back(state: RotationState, user: str, old: str, new: str, run_alive: bool, wait: Wait | None) -> Outlook:
    rollback = state.rollback
    if rollback is None or rollback.restored_at is None:
        if run_alive:
            return Outlook("rolling back: making the old key active and restoring it in Vault", "the rollback run")
        return Outlook(
            f"a rollback started at {_at(rollback.started_at if rollback else None)} and was interrupted",
            "an operator: no run is finishing it",
            f"keyrotor rollback {user}",
            needs_person=True,
        )
    if state.pause is not None:
        return Outlook(
            f"rolling back, paused since {_at(state.pause.at)}: {state.pause.reason} (flow run {state.pause.run_id})",
            "an operator to resume it",
            f"keyrotor resume {user}",
            needs_person=True,
        )
    quiet = format_duration(state.timings.quiet_period)
    doing = (
        f"rolled back to the old key {old} (active and in Vault since {_at(rollback.restored_at)}); waiting for "
        f"applications to stop using the new key {new} ({quiet} unused) before deactivating it"
    )
    if state.halted:
        return Outlook(
            f"stopped: {state.halted}",
            "an operator: find the application still using the new key",
            f"keyrotor rollback {user} (keeps waiting) or keyrotor rollback {user} --now",
            needs_person=True,
        )
    deadline = f"; gives up at {_at(rollback.wait_deadline)}" if rollback.wait_deadline else ""
    if wait is not None and not wait.held:
        return Outlook(doing + "; holds no process", f"applications; next check at {_at(wait.next_check_at)}{deadline}")
    if run_alive:
        return Outlook(doing, f"applications; a run is polling the new key's last use{deadline}")
    return Outlook(
        doing.replace("waiting", "was waiting", 1) + " when its run stopped",
        "an operator: nothing is checking the new key",
        f"keyrotor rollback {user} (continues the wait)",
        needs_person=True,
    )


def _waiting(state: RotationState, user: str, new: str, run_alive: bool, wait: Wait | None) -> Outlook:
    subject = "the key to retire" if state.retirement else f"old key {state.old_key_id}"
    quiet = format_duration(state.timings.quiet_period)
    deadline = f"; gives up at {_at(state.wait_deadline)}" if state.wait_deadline else ""
    doing = f"waiting for applications to stop using {subject} ({quiet} unused since {_at(state.published_at)})"
    if not state.retirement:
        doing += f"; Vault names the new key {new}"
    if wait is not None and not wait.held:
        return Outlook(doing + "; holds no process", f"applications; next check at {_at(wait.next_check_at)}{deadline}")
    if run_alive:
        return Outlook(doing, f"applications; a run is polling its last use{deadline}")
    return Outlook(
        doing.replace("waiting", "was waiting", 1) + " when its run stopped",
        "an operator: nothing is checking the old key",
        f"keyrotor rotate {user} (continues the wait)",
        needs_person=True,
    )


def _at(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "?"


def rotation_markdown(state: RotationState, view: Outlook, wait: Wait | None = None) -> str:
    """The rotation as the Prefect UI's artifact shows it: where it is, the keys, the evidence, the timeline, and what
    happens next (no secrets: the state holds none). Rendered from the same records and :class:`Outlook` as
    ``keyrotor status``."""
    kind = "Retirement" if state.retirement else "Rotation"
    timings = state.timings
    lines = [
        f"### {kind} `{state.rotation_id}` of `{state.user_name}` (account {state.account_id})",
        "",
        f"- **status**: {view.status} (phase `{state.phase.value}`)",
        f"- **doing**: {view.doing}",
        f"- **waiting for**: {view.waiting_for}",
        f"- **next**: `{view.command}`" if view.command else "- **next**: nothing to do",
        f"- **old key**: `{state.old_key_id or '-'}`; **{'kept' if state.retirement else 'new'} key**: "
        f"`{state.new_key_id or '-'}`",
        f"- **timings**: quiet period {format_duration(timings.quiet_period)}, poll interval "
        f"{format_duration(timings.poll_interval)}, max wait {format_duration(timings.max_wait)}, grace period "
        f"{format_duration(timings.grace_period)}",
    ]
    look = wait.last_check if wait is not None and wait.rotation_id == state.rotation_id else None
    if look is not None:
        lines.append(f"- **last look**: {_at(look.at)}: {look.last_used.describe()} -> {look.outcome.value}")
    if state.last_used is not None:
        lines.append(f"- **evidence**: {state.last_used.describe()}")
    if state.approval is not None:
        answer = state.approval
        note = f" ({answer.note})" if answer.note else ""
        lines.append(
            f"- **approval**: {_PAST[answer.answer]} by {answer.answered_by} at {_at(answer.answered_at)}{note}"
        )
    if state.error:
        lines.append(f"- **error**: {state.error}")
    lines += ["", "| when | what |", "|---|---|"]
    lines += [f"| {_at(when)} | {what} |" for when, what in timeline(state)]
    return "\n".join(lines)


def timeline(state: RotationState) -> list[tuple[datetime, str]]:
    """What happened to the rotation, oldest first."""
    rollback = state.rollback
    events = [
        (state.started_at, f"started by {state.started_by}"),
        (state.created_at, f"new key {state.new_key_id} created"),
        (state.verified_at, "new key verified with STS"),
        (state.published_at, "published to Vault" if not state.retirement else "wait for quiet started"),
        (state.pause.at if state.pause else None, f"paused: {state.pause.reason}" if state.pause else ""),
        (
            state.approval.answered_at if state.approval else None,
            f"{_PAST[state.approval.answer]} by {state.approval.answered_by}" if state.approval else "",
        ),
        (state.deactivated_at, f"old key {state.old_key_id} deactivated"),
        (rollback.started_at if rollback else None, "rollback started"),
        (rollback.restored_at if rollback else None, f"old key {state.old_key_id} active and in Vault again"),
        (rollback.new_key_deactivated_at if rollback else None, f"new key {state.new_key_id} deactivated"),
        (rollback.new_key_deleted_at if rollback else None, f"new key {state.new_key_id} deleted"),
        (state.completed_at, f"ended: {state.phase.value}"),
    ]
    dated = [(when, what) for when, what in events if when is not None]
    return sorted(dated, key=lambda event: event[0])
