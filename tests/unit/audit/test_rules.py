"""The audit: report parsing, the three rules, exemptions and the report's wait, against tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyrotor.audit.cis import AuditPolicy, Rule
from keyrotor.audit.report import ROOT_ACCOUNT, CredentialReport, parse_report
from keyrotor.audit.rules import evaluate
from keyrotor.core.errors import AwsError

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


HEADER = (
    "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,"
    "password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,"
    "access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,"
    "access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
    "cert_1_last_rotated,cert_2_active,cert_2_last_rotated"
)


MULTIPLE, TOO_OLD, UNUSED = Rule.MULTIPLE_ACTIVE_KEYS, Rule.KEY_TOO_OLD, Rule.KEY_UNUSED


K1, K2 = "access_key_1", "access_key_2"


NO_KEY = ("false", None, None)


def ago(days: float) -> str:
    """A report date ``days`` days before NOW."""
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def key(age: float, used: float | None = None, active: bool = True) -> tuple[str, str | None, str | None]:
    """A key slot: created ``age`` days ago, last used ``used`` days ago (None: never)."""
    return ("true" if active else "false", ago(age), ago(used) if used is not None else None)


def line(user: str, *keys: tuple[str, str | None, str | None]) -> str:
    """One report line as AWS writes it (``N/A`` for absent dates)."""
    slots = [*keys, NO_KEY, NO_KEY][:2]
    cells = [user, f"arn:aws:iam::123456789012:user/{user}", ago(400), "false", "N/A", "N/A", "N/A", "false"]
    for active, rotated, used in slots:
        region, service = ("us-east-1", "s3") if used else ("N/A", "N/A")
        cells += [active, rotated or "N/A", used or "N/A", region, service]
    return ",".join([*cells, "false", "N/A", "false", "N/A"])


def report(*lines: str) -> CredentialReport:
    return parse_report("\n".join([HEADER, *lines]) + "\n", NOW - timedelta(hours=1))


DEFAULTS = AuditPolicy()


def found(*lines: str, policy: AuditPolicy = DEFAULTS) -> set[tuple[str, Rule, str]]:
    result = evaluate(report(*lines), {}, policy, NOW)
    return {(finding.user, finding.rule, finding.slot) for finding in result.findings}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param((), set(), id="no keys"),
        pytest.param((key(10, used=1),), set(), id="fresh key in use"),
        pytest.param((key(10),), set(), id="fresh key never used"),
        pytest.param((key(44),), set(), id="never used, 44 days old"),
        pytest.param((key(45),), {UNUSED}, id="never used, 45 days old counts as unused"),
        pytest.param((key(60),), {UNUSED}, id="never used, 60 days old"),
        pytest.param((key(120),), {TOO_OLD, UNUSED}, id="never used, 120 days old"),
        pytest.param((key(90, used=1),), set(), id="exactly 90 days old is not too old"),
        pytest.param((key(90.5, used=1),), {TOO_OLD}, id="older than 90 days"),
        pytest.param((key(200, used=2),), {TOO_OLD}, id="old key in use"),
        pytest.param((key(80, used=44),), set(), id="unused 44 days"),
        pytest.param((key(80, used=45),), {UNUSED}, id="unused 45 days"),
        pytest.param((key(300, active=False),), set(), id="inactive old never-used key"),
        pytest.param((key(300, used=200, active=False), key(5, used=1)), set(), id="inactive old and active fresh"),
    ],
)
def test_rules_on_one_key(keys: tuple[Any, ...], expected: set[Rule]) -> None:
    assert found(line("alice", *keys)) == {("alice", rule, K1 if keys[0][0] == "true" else K2) for rule in expected}


def test_two_active_keys_give_one_finding_per_key_and_the_other_rules_still_apply() -> None:
    assert found(line("bob", key(200, used=1), key(5, used=1))) == {
        ("bob", MULTIPLE, K1),
        ("bob", TOO_OLD, K1),
        ("bob", MULTIPLE, K2),
    }
    assert found(line("carol", key(5, used=1), key(6))) == {("carol", MULTIPLE, K1), ("carol", MULTIPLE, K2)}


def test_thresholds_are_configurable() -> None:
    lines = (line("alice", key(100, used=20)),)
    assert found(*lines) == {("alice", TOO_OLD, K1)}
    assert found(*lines, policy=AuditPolicy(max_key_age_days=120, unused_days=10)) == {("alice", UNUSED, K1)}


def test_findings_carry_slot_cis_references_and_evidence() -> None:
    result = evaluate(report(line("alice", key(120))), {}, AuditPolicy(), NOW)
    too_old = next(f for f in result.findings if f.rule is TOO_OLD).to_json()
    assert too_old["key"] == too_old["slot"] == K1 and "key_id" not in too_old
    assert [(ref["control"], ref["versions"]) for ref in too_old["cis"]] == [("1.14", "v1.4.0-v3.0.0")]
    assert too_old["evidence"] | {"created": None} == {
        "created": None,
        "age_days": 120,
        "last_used": None,
        "last_used_service": None,
        "never_used": True,
        "idle_days": 120,
        "active_keys": 1,
        "threshold_days": 90,
    }
    assert too_old["message"] == "created 120 days ago (limit 90), never used"
    unused = next(f for f in result.findings if f.rule is UNUSED)
    assert unused.describe() == "never used, created 120 days ago (limit 45)"
    assert [ref.control for ref in unused.cis] == ["1.12"]


@pytest.mark.parametrize(
    ("tags", "policy", "reason"),
    [
        ({"keyrotor:exempt": "break-glass"}, AuditPolicy(), "tag keyrotor:exempt=break-glass"),
        ({"KeyRotor:Exempt": ""}, AuditPolicy(), "tag KeyRotor:Exempt="),
        ({"keyrotor:exempt": "False"}, AuditPolicy(), None),
        ({"keyrotor:exempt": "yes"}, AuditPolicy(exempt_tag=""), None),
        ({"team": "payments"}, AuditPolicy(exempt_tag="team"), "tag team=payments"),
        ({}, AuditPolicy(exempt_users=("SVC-*",)), "name matches SVC-*"),
        ({}, AuditPolicy(exempt_users=("ci-*", "svc-?ackup")), "name matches svc-?ackup"),
        ({}, AuditPolicy(exempt_users=("svc",)), None),
    ],
)
def test_exemptions_by_tag_or_name(tags: dict[str, str], policy: AuditPolicy, reason: str | None) -> None:
    result = evaluate(report(line("svc-backup", key(300))), {"svc-backup": tags}, policy, NOW)
    assert [exemption.reason for exemption in result.exempt] == ([reason] if reason else [])
    assert bool(result.findings) == (reason is None)


def test_exempt_users_are_listed_as_exempt_never_as_passing_or_as_findings() -> None:
    lines = (line("svc-old", key(300)), line("svc-idle"), line("tagged", key(5, used=1)), line("alice", key(5, used=1)))
    result = evaluate(report(*lines), {"tagged": {"keyrotor:exempt": "1"}}, AuditPolicy(exempt_users=("svc-*",)), NOW)
    assert not result.findings
    assert [(e.user, e.suppressed) for e in result.exempt] == [
        ("svc-old", (TOO_OLD, UNUSED)),
        ("svc-idle", ()),
        ("tagged", ()),
    ]
    summary = result.summary()
    assert (summary["users"], summary["compliant_users"], summary["exempt_users"]) == (4, 1, 3)
    assert [e["suppressed_rules"] for e in result.to_json()["exempt"]] == [["key-too-old", "key-unused"], [], []]


def test_only_users_limits_the_scope() -> None:
    lines = (line("team-a-1", key(300)), line("team-b-1", key(300)), line("Team-A-2"))
    result = evaluate(report(*lines), {}, AuditPolicy(only_users=("team-a-*",)), NOW)
    assert result.users == 2 and {f.user for f in result.findings} == {"team-a-1"}


def test_the_root_account_is_counted_apart_and_never_a_finding() -> None:
    root = line(ROOT_ACCOUNT, key(900, used=1), key(900))
    result = evaluate(report(root, line("alice", key(5, used=1))), {}, AuditPolicy(), NOW)
    assert not result.findings and result.users == 1
    assert result.summary()["root_active_keys"] == 2
    assert evaluate(report(line("alice")), {}, AuditPolicy(), NOW).summary()["root_active_keys"] is None


def test_json_shape_and_report_age() -> None:
    result = evaluate(report(line("alice", key(120))), {}, AuditPolicy(), NOW)
    output = result.to_json()
    assert list(output) == ["generated_at", "report_age_seconds", "findings", "exempt", "summary"]
    assert output["report_age_seconds"] == 3600 and output["generated_at"] == "2026-06-01T11:00:00+00:00"
    assert output["summary"]["findings_by_rule"] == {"multiple-active-keys": 0, "key-too-old": 1, "key-unused": 1}
    assert (output["summary"]["users_with_findings"], output["summary"]["compliant_users"]) == (1, 0)


def test_parse_reads_absent_values_as_none() -> None:
    parsed = report(line("alice", key(10, used=1), key(20, active=False)), line("bob"))
    first, second = parsed.users[0].keys
    assert first.active and first.last_used_service == "s3" and first.last_used_region == "us-east-1"
    assert not second.active and second.last_rotated is not None and second.last_used is None
    assert second.last_used_service is None
    assert [slot.last_rotated for slot in parsed.users[1].keys] == [None, None]
    assert parsed.generated_at == NOW - timedelta(hours=1)


def test_parse_accepts_bytes_short_lines_and_naive_dates() -> None:
    content = f"{HEADER}\nalice,arn:aws:iam::1:user/alice,x,false,N/A,N/A,N/A,false,true,2026-05-01T00:00:00\n"
    parsed = parse_report(content.encode(), datetime(2026, 6, 1))
    assert parsed.users[0].keys[0].last_rotated == datetime(2026, 5, 1, tzinfo=UTC)
    assert parsed.generated_at.tzinfo is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,arn\nalice,arn\n", "lacks the columns"),
        (f"{HEADER}\n" + line("a", key(1)).replace("+00:00", "x"), "unreadable date"),
    ],
)
def test_parse_refuses_what_is_not_a_credential_report(content: str, message: str) -> None:
    with pytest.raises(AwsError, match=message):
        parse_report(content, NOW)
