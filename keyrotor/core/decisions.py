"""Pure decisions of a rotation: given what IAM and Vault say, what to do next. No I/O here.

Each function is small and total, so the unit tests can check them against a table of cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import AccessKey, LastUsed, LeaseData, Phase, Quiet, RotationState

#: IAM allows this many access keys per user, active or not.
KEYS_PER_USER = 2


def old_key_of(user_name: str, keys: Sequence[AccessKey]) -> AccessKey | None:
    """The key a rotation retires: the user's one active key (None when it has none).

    Raises:
        PreconditionFailed: the user has two active keys, so nobody can tell which one applications use.
    """
    active = [key for key in keys if key.active]
    if len(active) > 1:
        ids = ", ".join(key.key_id for key in active)
        raise PreconditionFailed(
            f"user {user_name!r} has two active access keys ({ids}); keyrotor will not guess which one "
            "applications use. Deactivate the unused one (or run `keyrotor remediate`), then rotate again."
        )
    return active[0] if active else None


def slots_to_free(keys: Sequence[AccessKey], keep: str | None) -> tuple[str, ...]:
    """The Inactive keys to delete so that IAM's two-key limit leaves room for one more key: the oldest first,
    never an Active key and never ``keep`` (the rotation's old key, whatever its status)."""
    excess = len(keys) - (KEYS_PER_USER - 1)
    candidates = [key.key_id for key in sorted(keys, key=lambda key: key.created) if not key.active]
    return tuple(key_id for key_id in candidates if key_id != keep)[: max(0, excess)]


def orphan_keys(keys: Sequence[AccessKey], state: RotationState) -> list[str]:
    """Keys created by this rotation that were never stashed (a crash right after CreateAccessKey, or an answer
    lost on the way back): nothing can ever use such a key, its secret is lost.

    Every key that existed when the rotation started is listed in ``keys_before``; anything else is ours. The
    caller excludes the key it has stashed (which it adopts instead).
    """
    known = set(state.keys_before) | {state.old_key_id}
    return [key.key_id for key in keys if key.key_id not in known]


@dataclass(frozen=True)
class QuietCheck:
    """What one poll of the key's last-used date concluded, and when to look next."""

    outcome: Quiet
    quiet_since: datetime
    next_check_at: datetime | None
    #: While waiting: the soonest the wait can end (the key quiet for the quiet period if unused until then, or the
    #: deadline, whichever comes first).
    ends_by: datetime | None = None

    def in_use_since(self, since: datetime) -> bool:
        """Whether the key was used after ``since`` (the publish), as opposed to simply not quiet long enough yet."""
        return self.quiet_since > since

    def worth_parking(self, now: datetime, shortest: timedelta) -> bool:
        """Whether a run should park rather than wait in its process: only when the wait cannot end within
        ``shortest``. Waking a parked run starts a new process (seconds of CPU), which a wait of seconds does
        not repay."""
        return self.ends_by is not None and self.ends_by - now >= shortest


def check_quiet(
    *,
    since: datetime,
    last_used: LastUsed,
    quiet_period: timedelta,
    poll_interval: timedelta,
    deadline: datetime,
    now: datetime,
) -> QuietCheck:
    """Decide whether a key has gone unused for the quiet period since ``since`` (the publish of the new key).

    The clock starts at ``since``, or at the key's last use if that is later. At the deadline a key that is not
    quiet is never deactivated: the caller stops and lets an operator decide.
    """
    used_at = last_used.used_at
    quiet_since = max(since, used_at) if used_at is not None else since
    quiet_at = quiet_since + quiet_period
    if now >= quiet_at:
        return QuietCheck(Quiet.QUIET, quiet_since, None)
    if now >= deadline:
        return QuietCheck(Quiet.DEADLINE, quiet_since, None)
    ends_by = min(quiet_at, deadline)
    return QuietCheck(Quiet.WAIT, quiet_since, min(now + poll_interval, ends_by), ends_by)


class LeaseVerdict(StrEnum):
    """What a run may do with a rotation's lease."""

    ACQUIRE = "acquire"
    WAIT = "wait"


def judge_lease(lease: LeaseData | None, *, owner: str, flow_run_id: str | None, now: datetime) -> LeaseVerdict:
    """A lease is free when nobody holds it, it expired, or it is ours (same owner or same Prefect flow run)."""
    if lease is None or not lease.owner:
        return LeaseVerdict.ACQUIRE
    if lease.owner == owner or (flow_run_id is not None and lease.flow_run_id == flow_run_id):
        return LeaseVerdict.ACQUIRE
    return LeaseVerdict.ACQUIRE if lease.expires_at is None or lease.expires_at <= now else LeaseVerdict.WAIT


def within_cooldown(previous_requested_at: datetime, requested_at: datetime, cooldown: timedelta) -> bool:
    """Whether a rotation requested at ``requested_at`` comes too soon after the previous one, requested at
    ``previous_requested_at``.

    Both are when each rotation was due (a schedule's time, or when a person asked), never when a run happened to
    create its key: a daily schedule with a one-day cooldown is then exactly one day apart, every day, however late
    each run started.
    """
    return requested_at - previous_requested_at < cooldown


def deletion_due(state: RotationState, now: datetime) -> bool:
    """Whether a key of this rotation waits for its deletion and its grace period is over: the deactivated old key
    of a rotation, or the deactivated new key of a rollback."""
    if state.phase is Phase.DEACTIVATED:
        return state.delete_after is not None and state.delete_after <= now
    rollback = state.rollback
    if state.phase is Phase.ROLLED_BACK and rollback is not None and rollback.new_key_deleted_at is None:
        return rollback.delete_after is not None and rollback.delete_after <= now
    return False
