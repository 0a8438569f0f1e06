"""What a rotation is doing, who or what it waits for, and the one command that moves it on. Pure: no I/O.

``keyrotor status``, ``keyrotor fleet-status`` and the rotation's artifact in the Prefect UI all say it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyrotor.core.durations import format_duration
from keyrotor.core.model import Phase, RotationState


@dataclass(frozen=True)
class Outlook:
    """A rotation seen by an operator.

    Attributes:
        doing: What the rotation is doing (or how it ended), in a sentence.
        waiting_for: Who or what it waits for, and until when; "nothing" when it needs nobody.
        command: The one command that moves it on; empty when nothing needs doing.
        needs_person: True when it stays where it is until an operator acts.
    """

    doing: str
    waiting_for: str
    command: str = ""
    needs_person: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "doing": self.doing,
            "waiting_for": self.waiting_for,
            "command": self.command,
            "needs_person": self.needs_person,
        }


def outlook(
    state: RotationState | None,
    user: str,
    now: datetime,
    *,
    run_alive: bool = False,
    next_check_at: datetime | None = None,
) -> Outlook:
    """Describe ``user``'s rotation.

    Args:
        state: The durable record, None when there is none.
        user: The IAM user (for the commands).
        now: The current time.
        run_alive: A run holds the rotation's lease right now (it is working, or waiting in its process).
        next_check_at: When the waker looks at the old key next, for a rotation parked while it waits.
    """
    if state is None:
        return Outlook("no rotation recorded", "nothing", f"keyrotor rotate {user}")
    old, new = state.old_key_id or "(none)", state.new_key_id or "(none)"
    if state.rollback_started_at is not None and state.phase is not Phase.ROLLED_BACK:
        if run_alive:
            return Outlook("rolling back to the old key", "the rollback run to finish")
        return Outlook(
            f"a rollback started at {_at(state.rollback_started_at)} and was interrupted",
            "an operator: no run is finishing it",
            f"keyrotor rollback {user}",
            needs_person=True,
        )
    if state.phase.terminal:
        return _ended(state, user, old, new)
    if state.paused_run_id:
        reason = state.pause_reason or "paused"
        approval = "approval" in reason
        return Outlook(
            f"paused since {_at(state.paused_at)}: {reason} (flow run {state.paused_run_id}); holds no process",
            "an operator's approval to deactivate the old key" if approval else "an operator to resume it",
            f"keyrotor resume {user} --approve (or --reject)" if approval else f"keyrotor resume {user}",
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
        return _waiting(state, user, old, new, now, run_alive, next_check_at)
    if state.phase is Phase.DEACTIVATED:
        if state.delete_after is None or state.delete_after <= now:
            return Outlook(
                f"old key {old} is inactive; its grace period is over",
                "its deletion (the scheduled run, or the hourly finish-due-deletions)",
                f"keyrotor finish {user}",
            )
        when = f"scheduled run {state.deletion_run_id}" if state.deletion_run_id else "no run scheduled"
        return Outlook(
            f"old key {old} is inactive since {_at(state.deactivated_at)} (grace period)",
            f"the grace period to end at {_at(state.delete_after)} ({when}); rollback is possible until then",
            "" if state.deletion_run_id else f"keyrotor finish {user} (after {_at(state.delete_after)})",
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
        kind = "retirement" if state.retirement else "rotation"
        return Outlook(f"{kind} completed at {_at(state.completed_at)}: {what}", "nothing")
    if state.phase is Phase.ROLLED_BACK:
        if (state.rollback or {}).get("new_key_kept"):
            return Outlook(
                f"rolled back at {_at(state.rolled_back_at)}: old key {old} is active again; Vault had no secret "
                f"before the rotation, so it still names the new key {new}, which stays active",
                "an operator: deactivate the new key once nothing uses it, or rotate again",
                f"keyrotor rotate {user} --force",
                needs_person=True,
            )
        return Outlook(
            f"rolled back at {_at(state.rolled_back_at)}: old key {old} is active and in Vault again"
            + ("" if state.retirement else f", new key {new} inactive"),
            "nothing",
            f"keyrotor rotate {user} (when the application that broke is fixed)",
        )
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


def _waiting(
    state: RotationState,
    user: str,
    old: str,
    new: str,
    now: datetime,
    run_alive: bool,
    next_check_at: datetime | None,
) -> Outlook:
    subject = "the key to retire" if state.retirement else f"old key {old}"
    quiet = format_duration(state.timing("quiet_period"))
    deadline = f"; gives up at {_at(state.wait_deadline)}" if state.wait_deadline else ""
    doing = f"waiting for applications to stop using {subject} ({quiet} unused since {_at(state.published_at)})"
    if not state.retirement:
        doing += f"; Vault names the new key {new}"
    if next_check_at is not None:
        return Outlook(doing + "; holds no process", f"applications; next check at {_at(next_check_at)}{deadline}")
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


def rotation_markdown(state: RotationState, view: Outlook) -> str:
    """The rotation as the Prefect UI's artifact shows it: where it is, the keys, the evidence, the timeline, and what
    happens next (no secrets: the state holds none)."""
    kind = "Retirement" if state.retirement else "Rotation"
    lines = [
        f"### {kind} `{state.rotation_id}` of `{state.user_name}` (account {state.account_id})",
        "",
        f"- **phase**: `{state.phase.value}`",
        f"- **doing**: {view.doing}",
        f"- **waiting for**: {view.waiting_for}",
        f"- **next**: `{view.command}`" if view.command else "- **next**: nothing to do",
        f"- **old key**: `{state.old_key_id or '-'}`; **{'kept' if state.retirement else 'new'} key**: "
        f"`{state.new_key_id or '-'}`",
        "- **timings**: "
        + ", ".join(f"{name.replace('_', ' ')} {format_duration(seconds)}" for name, seconds in state.timings.items()),
    ]
    if state.last_used:
        used = state.last_used
        lines.append(
            f"- **evidence**: `{used.get('key_id')}` last used {used.get('used_at') or 'never'}"
            f" by {used.get('service') or '?'}"
        )
    if state.error:
        lines.append(f"- **error**: {state.error}")
    lines += ["", "| when | what |", "|---|---|"]
    events = [
        (state.started_at, f"started by {state.started_by}"),
        (state.created_at, f"new key {state.new_key_id} created"),
        (state.verified_at, "new key verified with STS"),
        (state.published_at, "published to Vault" if not state.retirement else "wait for quiet started"),
        (state.paused_at, f"paused: {state.pause_reason}"),
        (state.deactivated_at, f"old key {state.old_key_id} deactivated"),
        (state.rollback_started_at, "rollback started"),
        (state.rolled_back_at, "rolled back"),
        (state.completed_at, f"ended: {state.phase.value}"),
    ]
    dated = [(when, what) for when, what in events if when is not None]
    lines += [f"| {_at(when)} | {what} |" for when, what in sorted(dated, key=lambda event: event[0])]
    return "\n".join(lines)
