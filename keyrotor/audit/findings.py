"""What an audit concludes: findings with their evidence, exemptions, per-user verdicts and the whole result (with
its JSON form for ``keyrotor audit --json``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyrotor.audit.cis import CIS_REFERENCES, AuditPolicy, CisReference, Rule
from keyrotor.core.timestamps import iso_or_none


@dataclass(frozen=True)
class Evidence:
    """What a key's findings are based on, as of the audit.

    Attributes:
        created: When the key was created (last rotated).
        last_used: When it last signed a request; None when never used.
        last_used_service: The service of that request, when known.
        active_keys: How many active keys the user has.
        as_of: The time the rules were applied at.
    """

    created: datetime | None
    last_used: datetime | None
    last_used_service: str | None
    active_keys: int
    as_of: datetime

    @property
    def age_days(self) -> int | None:
        """Whole days since ``created``."""
        return (self.as_of - self.created).days if self.created is not None else None

    @property
    def idle_days(self) -> int | None:
        """Whole days since the last use, or since ``created`` for a never-used key."""
        since = self.last_used or self.created
        return (self.as_of - since).days if since is not None else None

    def to_json(self) -> dict[str, Any]:
        """The evidence as a JSON object."""
        return {
            "created": iso_or_none(self.created),
            "age_days": self.age_days,
            "last_used": iso_or_none(self.last_used),
            "last_used_service": self.last_used_service,
            "never_used": self.last_used is None,
            "idle_days": self.idle_days,
            "active_keys": self.active_keys,
        }


@dataclass(frozen=True)
class Finding:
    """One rule broken by one active key.

    Attributes:
        user: The IAM user.
        arn: The user's ARN.
        rule: The rule broken.
        slot: The key's column in the credential report.
        evidence: The dates and counts the rule judged.
        threshold_days: The rule's threshold in days; None for ``multiple-active-keys``.
    """

    user: str
    arn: str
    rule: Rule
    slot: str
    evidence: Evidence
    threshold_days: int | None = None

    @property
    def cis(self) -> tuple[CisReference, ...]:
        """The CIS controls behind the rule."""
        return CIS_REFERENCES[self.rule]

    def describe(self) -> str:
        """The finding in one phrase, e.g. ``created 200 days ago (limit 90), last used 1 days ago``."""
        evidence = self.evidence
        used = "never used" if evidence.last_used is None else f"last used {evidence.idle_days} days ago"
        if self.rule is Rule.MULTIPLE_ACTIVE_KEYS:
            return f"one of {evidence.active_keys} active keys, {used}"
        if self.rule is Rule.KEY_TOO_OLD:
            return f"created {evidence.age_days} days ago (limit {self.threshold_days}), {used}"
        if evidence.last_used is None:
            return f"never used, created {evidence.idle_days} days ago (limit {self.threshold_days})"
        return f"{used} (limit {self.threshold_days})"

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return {
            "user": self.user,
            "arn": self.arn,
            "rule": self.rule.value,
            "key": self.slot,  # the report names keys by slot; remediation reads their ids live
            "slot": self.slot,
            "cis": [ref.to_json() for ref in self.cis],
            "message": self.describe(),
            "evidence": self.evidence.to_json() | {"threshold_days": self.threshold_days},
        }


@dataclass(frozen=True)
class Exemption:
    """A user left out of the audit's verdict on purpose.

    Attributes:
        user: The IAM user.
        arn: The user's ARN.
        reason: Which tag or name pattern exempts it.
        suppressed: The rules its keys break, which are not reported as findings.
    """

    user: str
    arn: str
    reason: str
    suppressed: tuple[Rule, ...]

    def to_json(self) -> dict[str, Any]:
        """The exemption as a JSON object."""
        return {
            "user": self.user,
            "arn": self.arn,
            "reason": self.reason,
            "suppressed_rules": [rule.value for rule in self.suppressed],
        }


@dataclass(frozen=True)
class AuditResult:
    """The audit's verdict on every IAM user in scope.

    Attributes:
        generated_at: When AWS generated the credential report the verdict is based on.
        evaluated_at: When the rules were applied.
        policy: The thresholds and exemptions applied.
        users: How many IAM users were in scope (the root account is not an IAM user).
        findings: Rules broken by users that are not exempt, by user and slot.
        exempt: Exempt users, whatever their keys.
        root_active_keys: The root account's active keys, or None when the report has no root line.
    """

    generated_at: datetime
    evaluated_at: datetime
    policy: AuditPolicy
    users: int
    findings: tuple[Finding, ...]
    exempt: tuple[Exemption, ...]
    root_active_keys: int | None = None

    @property
    def report_age(self) -> timedelta:
        """How old the report's data was when the rules were applied."""
        return self.evaluated_at - self.generated_at

    @property
    def users_with_findings(self) -> int:
        """How many users break at least one rule."""
        return len({finding.user for finding in self.findings})

    def summary(self) -> dict[str, Any]:
        """Counts: users in scope, compliant, with findings, exempt; findings by rule; thresholds; root keys."""
        by_rule = {rule.value: 0 for rule in Rule}
        for finding in self.findings:
            by_rule[finding.rule.value] += 1
        return {
            "users": self.users,
            "compliant_users": self.users - self.users_with_findings - len(self.exempt),
            "users_with_findings": self.users_with_findings,
            "exempt_users": len(self.exempt),
            "findings": len(self.findings),
            "findings_by_rule": by_rule,
            "max_key_age_days": self.policy.max_key_age_days,
            "unused_days": self.policy.unused_days,
            "root_active_keys": self.root_active_keys,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole result as the one JSON object ``keyrotor audit --json`` prints."""
        return {
            "generated_at": iso_or_none(self.generated_at),
            "report_age_seconds": round(self.report_age.total_seconds()),
            "findings": [finding.to_json() for finding in self.findings],
            "exempt": [exemption.to_json() for exemption in self.exempt],
            "summary": self.summary(),
        }


@dataclass(frozen=True)
class UserVerdict:
    """The rules one user's keys break, before exemptions are known.

    Attributes:
        user: The IAM user.
        arn: The user's ARN.
        findings: The rules its keys break.
    """

    user: str
    arn: str
    findings: tuple[Finding, ...]
