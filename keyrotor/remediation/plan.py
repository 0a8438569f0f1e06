"""What to do about each user the audit flagged, decided from live IAM and Vault facts. Pure: no I/O.

One action per user, in this order of precedence:
- two active keys: keep the key whose secret is in Vault (else the one used most recently) and retire the other
  through the quiet wait, deactivation and grace-period deletion, without creating a third key; if both are in
  recent use and neither is in Vault, nobody can tell which one matters: "needs a person", nothing changes;
- an unused key: deactivate it after confirming it is still unused, delete it after the grace period;
- an old key: rotate it (the rotation flow);
- exempt users never get a plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyrotor.audit.cis import Rule
from keyrotor.audit.findings import Finding
from keyrotor.core.model import AccessKey, LastUsed

# Two active keys both used within this window are both in recent use: nobody can tell which one the applications
# need, so the user needs a person. A day covers AWS's last-used lag (up to 4 hours) with margin.
RECENT_USE = timedelta(days=1)


class Action(StrEnum):
    """The remedy chosen for one user."""

    ROTATE = "rotate"
    RETIRE = "retire-extra-key"
    DEACTIVATE_UNUSED = "deactivate-unused-key"
    NEEDS_PERSON = "needs-a-person"
    IN_PROGRESS = "in-progress"
    NOTHING = "nothing"


@dataclass(frozen=True)
class UserPlan:
    """One user's remedy: which key it acts on, which key it keeps, and why."""

    user: str
    action: Action
    rules: tuple[str, ...]
    reason: str
    key_id: str | None = None
    keep_key_id: str | None = None
    account_id: str | None = None

    def in_account(self, account_id: str) -> UserPlan:
        return dataclasses.replace(self, account_id=account_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "user": self.user,
            "action": self.action.value,
            "rules": list(self.rules),
            "key_id": self.key_id,
            "keep_key_id": self.keep_key_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class UserFacts:
    """What IAM and Vault say about one flagged user right now (re-read before any change)."""

    keys: Sequence[AccessKey]
    published_key_id: str | None
    last_used: Mapping[str, LastUsed]
    in_progress: str | None = (
        None  # a rotation or retirement that has not ended, e.g. "rotation abc in phase published"
    )


def rules_by_user(findings: Iterable[Finding]) -> dict[str, set[Rule]]:
    """The rules each flagged user breaks."""
    flagged: dict[str, set[Rule]] = {}
    for finding in findings:
        flagged.setdefault(finding.user, set()).add(finding.rule)
    return flagged


def plan_user(
    user: str,
    rules: set[Rule],
    facts: UserFacts,
    *,
    now: datetime,
    recent: timedelta,
    max_age: timedelta,
    unused: timedelta,
) -> UserPlan:
    """Choose the remedy for one user from its live keys (the audit's report may be hours old). A user whose
    rotation (or retirement) has not ended gets none: a second remediation never starts a second one."""
    names = tuple(sorted(rule.value for rule in rules))
    if facts.in_progress:
        return UserPlan(user, Action.IN_PROGRESS, names, f"{facts.in_progress} has not ended")
    active = [key for key in facts.keys if key.active]
    if len(active) >= 2:
        return _two_active_keys(user, names, active, facts, now, recent)
    if not active:
        return UserPlan(user, Action.NOTHING, names, "no active key any more")
    key = active[0]
    used = facts.last_used.get(key.key_id, LastUsed(key.key_id, None))
    idle_since = used.used_at or key.created
    if Rule.KEY_UNUSED in rules and now - idle_since >= unused:
        return UserPlan(user, Action.DEACTIVATE_UNUSED, names, f"{used.describe()}", key_id=key.key_id)
    if now - key.created >= max_age:
        return UserPlan(user, Action.ROTATE, names, f"created {key.created.date().isoformat()}", key_id=key.key_id)
    return UserPlan(user, Action.NOTHING, names, "compliant now (the report predates a change)")


def _two_active_keys(
    user: str,
    names: tuple[str, ...],
    active: list[AccessKey],
    facts: UserFacts,
    now: datetime,
    recent: timedelta,
) -> UserPlan:
    def used_at(key: AccessKey) -> datetime | None:
        last = facts.last_used.get(key.key_id)
        return last.used_at if last else None

    in_vault = [key for key in active if key.key_id == facts.published_key_id]
    if in_vault:
        keep, why = in_vault[0], "its secret is in Vault"
    else:
        recently = [key for key in active if (at := used_at(key)) is not None and now - at < recent]
        if len(recently) >= 2:
            return UserPlan(
                user,
                Action.NEEDS_PERSON,
                names,
                "both active keys are in recent use and neither is in Vault: a person must say which one matters",
            )
        keep = max(active, key=lambda key: (used_at(key) or datetime.min.replace(tzinfo=now.tzinfo), key.created))
        why = "used most recently" if used_at(keep) else "newest (neither was ever used)"
    retire = next(key for key in active if key.key_id != keep.key_id)
    return UserPlan(
        user, Action.RETIRE, names, f"keep {keep.key_id} ({why})", key_id=retire.key_id, keep_key_id=keep.key_id
    )
