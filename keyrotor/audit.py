"""The access-key audit as pure functions: parse IAM's credential report, apply the rules, list exemptions.

No I/O here (:mod:`keyrotor.credential_report` fetches the report and the tags), so every rule is tested
against a table of cases in microseconds.

The rules, each citing the CIS AWS Foundations Benchmark control it comes from (the numbers below are those of
versions 1.4.0 to 3.0.0; the numbering moves between versions, so the title is cited too):

* ``multiple-active-keys``: a user has two active keys (CIS 1.13). One finding per active key.
* ``key-too-old``: an active key was created (last rotated) more than ``max_key_age_days`` ago (CIS 1.14).
* ``key-unused``: an active key has not been used for ``unused_days`` or more; a key that was **never** used
  counts from its creation, as CIS 1.12's remediation says, so a never-used key older than the threshold is
  unused (CIS 1.12).

Inactive keys break no rule. Users carrying the exempt tag (any value but ``false``) or matching an exempt name
glob are listed as exempt, with the rules their keys break, and never as compliant nor as findings.

The credential report's ``<root_account>`` row is not an IAM user and keyrotor does
not rotate root keys (AWS and CIS say the root user should have none at all), so it never yields findings; its
active keys are counted in the summary instead.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from keyrotor.errors import AwsError

ROOT_ACCOUNT = "<root_account>"
SLOTS = ("access_key_1", "access_key_2")
# Values the credential report writes where a date or name is absent.
_ABSENT = frozenset({"", "N/A", "not_supported", "no_information"})
_KEY_FIELDS = ("active", "last_rotated", "last_used_date", "last_used_region", "last_used_service")
_REQUIRED_COLUMNS = ("user", "arn", *(f"{slot}_{name}" for slot in SLOTS for name in _KEY_FIELDS))


class Rule(StrEnum):
    """The rules an active access key is checked against."""

    MULTIPLE_ACTIVE_KEYS = "multiple-active-keys"
    KEY_TOO_OLD = "key-too-old"
    KEY_UNUSED = "key-unused"


@dataclass(frozen=True)
class CisReference:
    """A control of the CIS AWS Foundations Benchmark.

    Attributes:
        control: The control's number in ``versions``.
        versions: The benchmark versions that use this number.
        title: The control's title, which survives renumbering.
    """

    control: str
    versions: str
    title: str

    def __str__(self) -> str:
        return f"CIS AWS Foundations {self.versions} {self.control}"

    def to_json(self) -> dict[str, str]:
        """The reference as a JSON object."""
        return {
            "benchmark": "CIS AWS Foundations Benchmark",
            "versions": self.versions,
            "control": self.control,
            "title": self.title,
        }


_CIS_VERSIONS = "v1.4.0-v3.0.0"
CIS_REFERENCES: Mapping[Rule, tuple[CisReference, ...]] = {
    Rule.MULTIPLE_ACTIVE_KEYS: (
        CisReference(
            "1.13", _CIS_VERSIONS, "Ensure there is only one active access key available for any single IAM user"
        ),
    ),
    Rule.KEY_TOO_OLD: (CisReference("1.14", _CIS_VERSIONS, "Ensure access keys are rotated every 90 days or less"),),
    Rule.KEY_UNUSED: (
        CisReference("1.12", _CIS_VERSIONS, "Ensure credentials unused for 45 days or greater are disabled"),
    ),
}


@dataclass(frozen=True)
class KeySlot:
    """One of a user's two access-key columns in the credential report (which has no key ids).

    Attributes:
        slot: ``access_key_1`` or ``access_key_2``.
        active: Whether the key is Active; an empty slot reads as inactive.
        last_rotated: When the key was created; None for an empty slot.
        last_used: When the key last signed a request; None when never used.
        last_used_service: The service of that request, when known.
        last_used_region: The region of that request, when known.
    """

    slot: str
    active: bool
    last_rotated: datetime | None
    last_used: datetime | None = None
    last_used_service: str | None = None
    last_used_region: str | None = None


# The slots of users with fewer than two keys, shared: most of a report's slots are empty.
_EMPTY_SLOTS = {slot: KeySlot(slot, active=False, last_rotated=None) for slot in SLOTS}


@dataclass(frozen=True)
class ReportRow:
    """One line of the credential report.

    Attributes:
        user: The IAM user name, or ``<root_account>``.
        arn: The user's ARN (it includes the user's path).
        keys: The two key slots.
    """

    user: str
    arn: str
    keys: tuple[KeySlot, ...]

    @property
    def is_root(self) -> bool:
        """Whether this is the account's root user, which is not an IAM user."""
        return self.user == ROOT_ACCOUNT

    @property
    def active_keys(self) -> tuple[KeySlot, ...]:
        """The slots holding an Active key."""
        return tuple(key for key in self.keys if key.active)


@dataclass(frozen=True)
class CredentialReport:
    """The parsed credential report.

    Attributes:
        generated_at: When AWS generated it (it regenerates at most every 4 hours).
        rows: Every line, the root account's included.
    """

    generated_at: datetime
    rows: tuple[ReportRow, ...]

    @property
    def users(self) -> tuple[ReportRow, ...]:
        """The IAM users' lines (without the root account's)."""
        return tuple(row for row in self.rows if not row.is_root)

    @property
    def root(self) -> ReportRow | None:
        """The root account's line, when the report has one."""
        return next((row for row in self.rows if row.is_root), None)


@dataclass(frozen=True)
class AuditPolicy:
    """The thresholds, exemptions and scope of an audit.

    Attributes:
        max_key_age_days: An active key created more than this many days ago is too old.
        unused_days: An active key unused (or, never used, created) this many days ago or more is unused.
        exempt_tag: Users carrying this tag key are exempt, unless its value is ``false``; empty: no tag exempts.
        exempt_users: Users whose name matches one of these globs (case-insensitive) are exempt.
        only_users: When not empty, only users whose name matches one of these globs are audited.
    """

    max_key_age_days: int = 90
    unused_days: int = 45
    exempt_tag: str = "keyrotor:exempt"
    exempt_users: tuple[str, ...] = ()
    only_users: tuple[str, ...] = ()


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
            "created": _iso(self.created),
            "age_days": self.age_days,
            "last_used": _iso(self.last_used),
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
        key_id: The access key id once resolved with ListAccessKeys (the report has no ids).
    """

    user: str
    arn: str
    rule: Rule
    slot: str
    evidence: Evidence
    threshold_days: int | None = None
    key_id: str | None = None

    @property
    def key(self) -> str:
        """The key's id when known, else its slot."""
        return self.key_id or self.slot

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
            "key": self.key,
            "key_id": self.key_id,
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
            "generated_at": _iso(self.generated_at),
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


def parse_report(content: bytes | str, generated_at: datetime) -> CredentialReport:
    """Parse the credential report's CSV.

    Args:
        content: The report as ``GetCredentialReport`` returns it (boto3 has already base64-decoded it).
        generated_at: The report's ``GeneratedTime``.

    Returns:
        The report, row by row.

    Raises:
        AwsError: The document is not a credential report (a column is missing or a date does not parse).
    """
    text = content.decode() if isinstance(content, bytes) else content
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    missing = [name for name in _REQUIRED_COLUMNS if name not in header]
    if missing:
        raise AwsError(f"the credential report lacks the columns {', '.join(missing)}")
    user, arn = header.index("user"), header.index("arn")
    slots = [_SlotColumns.find(header, slot) for slot in SLOTS]
    rows: list[ReportRow] = []
    for values in reader:
        if values:
            values += [""] * (len(header) - len(values))
            rows.append(ReportRow(values[user], values[arn], tuple(_key_slot(values, slot) for slot in slots)))
    return CredentialReport(generated_at=_utc(generated_at), rows=tuple(rows))


def evaluate(
    report: CredentialReport, tags: Mapping[str, Mapping[str, str]], policy: AuditPolicy, now: datetime
) -> AuditResult:
    """Apply the rules and exemptions to every IAM user of the report in the policy's scope.

    Args:
        report: The parsed credential report.
        tags: Tags of the users that have any, by user name.
        policy: Thresholds, exemptions and scope.
        now: The time ages are measured to.

    Returns:
        The verdict: findings of users that are not exempt, and every exempt user.
    """
    return conclude(report, judge(report, policy, now), tags, policy, now)


def judge(report: CredentialReport, policy: AuditPolicy, now: datetime) -> tuple[UserVerdict, ...]:
    """Apply the rules to every IAM user in the policy's scope; needs no tags, so it can run while they load.

    Args:
        report: The parsed credential report.
        policy: Thresholds and scope.
        now: The time ages are measured to.

    Returns:
        One verdict per user in scope, in the report's order.
    """
    only = _compile(policy.only_users)
    cutoffs = _Cutoffs.of(policy, now)
    return tuple(
        UserVerdict(row.user, row.arn, tuple(_check_user(row, cutoffs)))
        for row in report.users
        if not only or _first_match(row.user, only) is not None
    )


def conclude(
    report: CredentialReport,
    verdicts: Iterable[UserVerdict],
    tags: Mapping[str, Mapping[str, str]],
    policy: AuditPolicy,
    now: datetime,
) -> AuditResult:
    """Split the verdicts into findings and exempt users.

    Args:
        report: The report the verdicts come from.
        verdicts: :func:`judge`'s verdicts.
        tags: Tags of the users that have any, by user name.
        policy: Exemptions.
        now: When the rules were applied.

    Returns:
        The audit's result.
    """
    findings: list[Finding] = []
    exempt: list[Exemption] = []
    users = 0
    name_globs = _compile(policy.exempt_users)
    for verdict in verdicts:
        users += 1
        user_tags = tags.get(verdict.user)
        reason = _tag_exemption(user_tags, policy.exempt_tag) if user_tags else None
        glob = _first_match(verdict.user, name_globs) if reason is None else None
        if glob is not None:
            reason = f"name matches {glob}"
        if reason is None:
            findings.extend(verdict.findings)
        else:
            rules = tuple(dict.fromkeys(finding.rule for finding in verdict.findings))
            exempt.append(Exemption(verdict.user, verdict.arn, reason, rules))
    root = report.root
    return AuditResult(
        generated_at=report.generated_at,
        evaluated_at=_utc(now),
        policy=policy,
        users=users,
        findings=tuple(findings),
        exempt=tuple(exempt),
        root_active_keys=len(root.active_keys) if root is not None else None,
    )


@dataclass(frozen=True)
class _Cutoffs:
    """The policy's thresholds as instants: a key created before ``too_old`` is too old, and so on."""

    now: datetime
    too_old: datetime
    unused: datetime
    max_key_age_days: int
    unused_days: int

    @classmethod
    def of(cls, policy: AuditPolicy, now: datetime) -> _Cutoffs:
        too_old, unused = now - timedelta(days=policy.max_key_age_days), now - timedelta(days=policy.unused_days)
        return cls(now, too_old, unused, policy.max_key_age_days, policy.unused_days)


def _check_user(row: ReportRow, cutoffs: _Cutoffs) -> list[Finding]:
    """The rules one user's active keys break, by slot then rule; inactive keys break none."""
    active = [key for key in row.keys if key.active]
    findings: list[Finding] = []
    for key in active:
        created, since = key.last_rotated, key.last_used or key.last_rotated
        broken: list[tuple[Rule, int | None]] = []
        if len(active) > 1:
            broken.append((Rule.MULTIPLE_ACTIVE_KEYS, None))
        if created is not None and created < cutoffs.too_old:
            broken.append((Rule.KEY_TOO_OLD, cutoffs.max_key_age_days))
        if since is not None and since <= cutoffs.unused:
            broken.append((Rule.KEY_UNUSED, cutoffs.unused_days))
        if broken:
            evidence = Evidence(created, key.last_used, key.last_used_service, len(active), cutoffs.now)
            findings.extend(
                Finding(row.user, row.arn, rule, key.slot, evidence, threshold) for rule, threshold in broken
            )
    return findings


def _tag_exemption(tags: Mapping[str, str], exempt_tag: str) -> str | None:
    """``tag KEY=VALUE`` when the user carries the exempt tag, else None.

    Tag keys compare case-insensitively, as IAM treats them; a value of ``false`` does not exempt.
    """
    if not exempt_tag:
        return None
    wanted = exempt_tag.lower()
    for key, value in tags.items():
        if key.lower() == wanted and value.strip().lower() != "false":
            return f"tag {key}={value}"
    return None


def match_key_ids(findings: Iterable[Finding], keys: Mapping[str, Sequence[tuple[str, datetime]]]) -> list[Finding]:
    """Fill in the findings' key ids from ListAccessKeys, matching each slot by its creation second.

    The report dates keys to the second and has no ids; a slot whose key has been replaced since the report
    (no key created at that second) keeps no id.

    Args:
        findings: The findings to complete.
        keys: Each user's ``(AccessKeyId, CreateDate)`` pairs.

    Returns:
        The findings, with ``key_id`` set where a key matches.
    """
    resolved: list[Finding] = []
    for finding in findings:
        created = finding.evidence.created
        same_second = [
            key_id
            for key_id, made in keys.get(finding.user, ())
            if created is not None and _utc(made).replace(microsecond=0) == created
        ]
        # Two keys created within the same second cannot be told apart: leave the id unknown.
        resolved.append(replace(finding, key_id=same_second[0] if len(same_second) == 1 else None))
    return resolved


@dataclass(frozen=True)
class _SlotColumns:
    """Where one key slot's fields are in the report's lines."""

    slot: str
    active: int
    rotated: int
    used: int
    region: int
    service: int

    @classmethod
    def find(cls, header: list[str], slot: str) -> _SlotColumns:
        def at(name: str) -> int:
            return header.index(f"{slot}_{name}")

        return cls(
            slot,
            at("active"),
            at("last_rotated"),
            at("last_used_date"),
            at("last_used_region"),
            at("last_used_service"),
        )


def _key_slot(values: list[str], columns: _SlotColumns) -> KeySlot:
    """One key slot of a CSV line."""
    active = values[columns.active] == "true"
    if not active and values[columns.rotated] in _ABSENT:
        return _EMPTY_SLOTS[columns.slot]
    return KeySlot(
        columns.slot,
        active,
        _time(values[columns.rotated]),
        _time(values[columns.used]),
        _text(values[columns.service]),
        _text(values[columns.region]),
    )


def _time(value: str) -> datetime | None:
    """A report date, or None for ``N/A`` and its kin; dates without an offset are UTC."""
    if value in _ABSENT:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise AwsError(f"the credential report has an unreadable date {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _text(value: str) -> str | None:
    return None if value in _ABSENT else value


def _utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime (naive ones are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _compile(globs: Iterable[str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Globs with their case-insensitive regular expressions (IAM user names are case-insensitive)."""
    return tuple((glob, re.compile(fnmatch.translate(glob), re.IGNORECASE)) for glob in globs)


def _first_match(user: str, globs: Iterable[tuple[str, re.Pattern[str]]]) -> str | None:
    """The first glob the user name matches, or None."""
    return next((glob for glob, pattern in globs if pattern.match(user)), None)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
