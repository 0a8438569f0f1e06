"""The shipped IAM policies, evaluated as IAM evaluates them (explicit Deny wins, then any Allow, else denied):
whoever holds the rotation policy can rotate the keys of the users keyrotor manages, and nobody else's."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import pytest

from tests.conftest import ROOT

ACCOUNT, OTHER_ACCOUNT, BOT = "111122223333", "444455556666", "keyrotor"
WRITES = ("iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:DeleteAccessKey")
READS = ("iam:GetUser", "iam:ListUserTags", "iam:ListAccessKeys", "iam:GetAccessKeyLastUsed")
TRAIL = ("cloudtrail:LookupEvents",)  # who used a key: LookupEvents has no resource-level permissions
AUDIT = ("iam:GenerateCredentialReport", "iam:GetCredentialReport", "iam:GetAccountAuthorizationDetails")


def load(name: str, account: str = ACCOUNT, bot: str = BOT) -> dict[str, Any]:
    text = (ROOT / "policies" / name).read_text().replace("ACCOUNT_ID", account).replace("KEYROTOR_USER", bot)
    policy: dict[str, Any] = json.loads(text)
    return policy


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _matches(pattern: str, value: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return re.fullmatch(fnmatch.translate(pattern), value) is not None


def _conditions_hold(conditions: dict[str, dict[str, str | list[str]]], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        if operator != "StringEquals":
            raise AssertionError(f"this evaluator does not know {operator}: teach it before relying on it")
        for key, wanted in tests.items():
            if context.get(key) not in _listed(wanted):
                return False
    return True


def allowed(policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """IAM's decision for one request under this identity policy alone."""
    context = context or {}
    decision = False
    for statement in policy["Statement"]:
        assert "NotAction" not in statement and "NotResource" not in statement
        if not any(_matches(pattern, action, case_sensitive=False) for pattern in _listed(statement["Action"])):
            continue
        resources = [
            r.replace("${aws:username}", context.get("aws:username", "\x00")) for r in _listed(statement["Resource"])
        ]
        if not any(_matches(pattern, resource, case_sensitive=True) for pattern in resources):
            continue
        if not _conditions_hold(statement.get("Condition", {}), context):
            continue
        if statement["Effect"] == "Deny":
            return False
        decision = True
    return decision


def user(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


MANAGED = {"aws:ResourceTag/keyrotor:managed": "true"}


@pytest.mark.parametrize("action", WRITES)
def test_the_keys_of_managed_users_can_be_rotated(action: str) -> None:
    assert allowed(load("iam-policy.json"), action, user("billing-app"), MANAGED)


@pytest.mark.parametrize("action", WRITES)
@pytest.mark.parametrize(
    ("who", "context", "why"),
    [
        (user("admin"), {}, "an administrator, not tagged as managed"),
        (user("admin"), {"aws:ResourceTag/keyrotor:managed": "false"}, "tagged, but not managed"),
        (user(BOT), MANAGED, "keyrotor's own user, even if tagged"),
        (user("whoever-runs-it"), MANAGED | {"aws:username": "whoever-runs-it"}, "the caller itself"),
        (user("billing-app", OTHER_ACCOUNT), MANAGED, "another account"),
        ("arn:aws:iam::111122223333:role/admin", MANAGED, "not a user"),
    ],
)
def test_no_one_else_s_keys_can_be_created_changed_or_deleted(
    action: str, who: str, context: dict[str, str], why: str
) -> None:
    assert not allowed(load("iam-policy.json"), action, who, context), why


@pytest.mark.parametrize("action", READS)
def test_keyrotor_can_read_any_user_s_keys_in_its_account(action: str) -> None:
    policy = load("iam-policy.json")
    assert allowed(policy, action, user("admin")) and not allowed(policy, action, user("admin", OTHER_ACCOUNT))


@pytest.mark.parametrize("action", [*AUDIT, "sts:GetCallerIdentity", "iam:CreateUser", "iam:AttachUserPolicy", "iam:*"])
def test_the_rotation_policy_grants_nothing_else(action: str) -> None:
    assert not allowed(load("iam-policy.json"), action, "*") and not allowed(load("iam-policy.json"), action, user("x"))


def test_the_audit_policy_only_reads() -> None:
    policy = load("iam-audit-policy.json")
    for action in AUDIT:
        assert allowed(policy, action, "*")
    for action in (*WRITES, *READS, "iam:CreateUser", "iam:PutUserPolicy"):
        assert not allowed(policy, action, user("x"), MANAGED)
    actions = {a for statement in policy["Statement"] for a in _listed(statement["Action"])}
    assert actions == set(AUDIT) and all(statement["Effect"] == "Allow" for statement in policy["Statement"])


def test_the_policies_name_exactly_the_actions_keyrotor_calls() -> None:
    rotation = {a for s in load("iam-policy.json")["Statement"] for a in _listed(s["Action"])}
    assert rotation == {*WRITES, *READS, *TRAIL}


def test_the_management_policy_lists_accounts_and_enters_them_through_keyrotor_s_role_only() -> None:
    text = (ROOT / "policies" / "org-management-policy.json").read_text().replace("ROLE_NAME", "keyrotor-member")
    policy = json.loads(text)
    assert allowed(policy, "organizations:ListAccounts", "*")
    assert allowed(policy, "sts:AssumeRole", "arn:aws:iam::444455556666:role/keyrotor-member")
    for role in ("OrganizationAccountAccessRole", "admin", "keyrotor-member-2"):
        assert not allowed(policy, "sts:AssumeRole", f"arn:aws:iam::444455556666:role/{role}"), role
    for action in (*WRITES, *READS, *AUDIT, "organizations:CreateAccount", "organizations:*"):
        assert not allowed(policy, action, "*"), action


def test_the_member_role_trusts_keyrotor_only_with_the_external_id() -> None:
    trust = json.loads((ROOT / "policies" / "org-member-role-trust.json").read_text())
    (statement,) = trust["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRole"
    assert statement["Principal"] == {"AWS": "arn:aws:iam::MANAGEMENT_ACCOUNT_ID:user/KEYROTOR_USER"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "EXTERNAL_ID"}}
