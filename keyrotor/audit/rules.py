"""The access-key audit's rules as pure functions: apply them to a parsed credential report, list exemptions.

No I/O here (:mod:`keyrotor.adapters.credential_report` fetches the report and the tags), so every rule is tested
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

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from keyrotor.audit.cis import AuditPolicy, Rule
from keyrotor.audit.findings import AuditResult, Evidence, Exemption, Finding, UserVerdict
from keyrotor.audit.report import CredentialReport, ReportRow
from keyrotor.core.timestamps import as_utc


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
        evaluated_at=as_utc(now),
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


def _compile(globs: Iterable[str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Globs with their case-insensitive regular expressions (IAM user names are case-insensitive)."""
    return tuple((glob, re.compile(fnmatch.translate(glob), re.IGNORECASE)) for glob in globs)


def _first_match(user: str, globs: Iterable[tuple[str, re.Pattern[str]]]) -> str | None:
    """The first glob the user name matches, or None."""
    return next((glob for glob, pattern in globs if pattern.match(user)), None)
