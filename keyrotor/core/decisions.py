"""Pure decisions of a rotation: given what IAM and Vault say, what to do next. No I/O here.

Each function is small and total, so the unit tests can check them against a table of cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import AccessKey, LastUsed, RotationState


@dataclass(frozen=True)
class SlotPlan:
    """Which key the rotation retires, and which stale inactive keys it deletes to make room."""

    old_key: AccessKey | None
    delete: tuple[str, ...]


def plan_slots(user_name: str, keys: Sequence[AccessKey]) -> SlotPlan:
    """Choose the key to rotate and make sure IAM's two-key limit leaves room for a new one.

    An Inactive key that is not part of a rotation may be deleted to free the slot; an Active key never is.

    Raises:
        PreconditionFailed: the user has two active keys, so there is no safe slot.
    """
    active = [key for key in keys if key.active]
    if len(active) > 1:
        ids = ", ".join(key.key_id for key in active)
        raise PreconditionFailed(
            f"user {user_name!r} has two active access keys ({ids}); keyrotor will not guess which one "
            "applications use. Deactivate the unused one (or run `keyrotor remediate`), then rotate again."
        )
    inactive = [key.key_id for key in keys if not key.active]
    delete = tuple(inactive) if len(keys) >= 2 else ()
    return SlotPlan(old_key=active[0] if active else None, delete=delete)


def orphan_keys(keys: Sequence[AccessKey], state: RotationState, stashed_key_id: str | None) -> list[str]:
    """Keys created by this rotation whose secret was never stashed (a crash right after CreateAccessKey).

    Nothing can ever use such a key: its secret is lost. Every key that existed when the rotation
    started is listed in ``keys_before``, so anything else that is not the stashed key is ours and orphaned.
    """
    known = set(state.keys_before) | {state.old_key_id}
    return [key.key_id for key in keys if key.key_id not in known and key.key_id != stashed_key_id]


class Quiet(StrEnum):
    """Outcome of one look at the old key while waiting for applications to switch."""

    QUIET = "quiet"
    WAIT = "wait"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class QuietCheck:
    """What one poll of the old key's last-used date concluded, and when to look next."""

    outcome: Quiet
    quiet_since: datetime
    next_check_at: datetime | None


def check_quiet(
    *,
    published_at: datetime,
    last_used: LastUsed,
    quiet_period: timedelta,
    poll_interval: timedelta,
    deadline: datetime,
    now: datetime,
) -> QuietCheck:
    """Decide whether the old key has gone unused for the quiet period since the new key was published.

    The clock starts at the publish, or at the old key's last use if that is later. At the deadline a key
    that is not quiet is never deactivated: the caller stops and lets an operator decide.
    """
    used_at = last_used.used_at
    quiet_since = max(published_at, used_at) if used_at is not None else published_at
    quiet_at = quiet_since + quiet_period
    if now >= quiet_at:
        return QuietCheck(Quiet.QUIET, quiet_since, None)
    if now >= deadline:
        return QuietCheck(Quiet.DEADLINE, quiet_since, None)
    return QuietCheck(Quiet.WAIT, quiet_since, min(now + poll_interval, quiet_at, deadline))


class LeaseVerdict(StrEnum):
    """What a run may do with a rotation's lease."""

    ACQUIRE = "acquire"
    WAIT = "wait"


def judge_lease(lease: dict[str, Any] | None, *, owner: str, flow_run_id: str | None, now: datetime) -> LeaseVerdict:
    """A lease is free when nobody holds it, it expired, or it is ours (same owner or same Prefect flow run)."""
    if not lease or not lease.get("owner"):
        return LeaseVerdict.ACQUIRE
    if lease["owner"] == owner or (flow_run_id is not None and lease.get("flow_run_id") == flow_run_id):
        return LeaseVerdict.ACQUIRE
    expires_at = datetime.fromisoformat(lease["expires_at"])
    return LeaseVerdict.ACQUIRE if expires_at <= now else LeaseVerdict.WAIT
