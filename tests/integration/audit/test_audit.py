"""``keyrotor audit`` against the local moto server: exact findings for every case, exit codes, exemptions, errors.

The session's moto server is shared with other tests, so every assertion is about this module's own users, which
share a unique name prefix (``--user PREFIX-*``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from keyrotor.adapters.credential_report import audit_account
from keyrotor.audit.cis import AuditPolicy
from keyrotor.stack.moto_server import create_server
from keyrotor.stack.processes import LOOPBACK
from keyrotor.stack.seed import SeedKey, SeedUser, seed_users
from tests.helpers import keyrotor_cli

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
TOO_OLD, UNUSED, MULTIPLE = "key-too-old", "key-unused", "multiple-active-keys"
K1, K2 = "access_key_1", "access_key_2"


def days_ago(days: int) -> datetime:
    return NOW - timedelta(days=days)


@dataclass(frozen=True)
class Account:
    """This module's seeded users and what the audit must say about them."""

    prefix: str
    findings: frozenset[tuple[str, str, str]]
    exempt: dict[str, str]
    users: int


# name suffix -> keys, tags, expected (rule, slot) findings
CASES: dict[str, tuple[tuple[SeedKey, ...], dict[str, str], tuple[tuple[str, str], ...]]] = {
    "ok-no-keys": ((), {}, ()),
    "ok-fresh": ((SeedKey(days_ago(10), days_ago(1)),), {}, ()),
    "ok-fresh-never-used": ((SeedKey(days_ago(10)),), {}, ()),
    "ok-inactive-old": ((SeedKey(days_ago(300), active=False), SeedKey(days_ago(3), days_ago(1))), {}, ()),
    "ok-tagged": ((SeedKey(days_ago(400)),), {"keyrotor:exempt": "break-glass"}, ()),
    "old": ((SeedKey(days_ago(200), days_ago(2)),), {}, ((TOO_OLD, K1),)),
    "old-never-used": ((SeedKey(days_ago(120)),), {}, ((TOO_OLD, K1), (UNUSED, K1))),
    "never-used": ((SeedKey(days_ago(60)),), {}, ((UNUSED, K1),)),
    "idle": ((SeedKey(days_ago(80), days_ago(50)),), {}, ((UNUSED, K1),)),
    "two-active": (
        (SeedKey(days_ago(20), days_ago(1)), SeedKey(days_ago(5), days_ago(1))),
        {},
        ((MULTIPLE, K1), (MULTIPLE, K2)),
    ),
    "tag-false": ((SeedKey(days_ago(100), days_ago(1)),), {"keyrotor:exempt": "false"}, ((TOO_OLD, K1),)),
    "svc-robot": ((SeedKey(days_ago(500)),), {}, ((TOO_OLD, K1), (UNUSED, K1))),
}
EXEMPT = {"ok-tagged": "tag keyrotor:exempt=break-glass", "svc-robot": "name matches {prefix}-svc-*"}


@pytest.fixture(scope="module")
def account(stack_environ: dict[str, str]) -> Account:
    """Seed this module's users on the session's moto server."""
    prefix = f"audit{uuid.uuid4().hex[:6]}"
    seed_users(
        stack_environ["AWS_ENDPOINT_URL"],
        [SeedUser(f"{prefix}-{suffix}", keys, tags) for suffix, (keys, tags, _) in CASES.items()],
    )
    findings = frozenset(
        (f"{prefix}-{suffix}", rule, slot)
        for suffix, (_, _, expected) in CASES.items()
        if suffix not in EXEMPT
        for rule, slot in expected
    )
    exempt = {f"{prefix}-{suffix}": reason.format(prefix=prefix) for suffix, reason in EXEMPT.items()}
    return Account(prefix, findings, exempt, len(CASES))


def audit_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = keyrotor_cli(env, "audit", "--json", *args, timeout=60)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_findings_are_exactly_the_seeded_truth(stack_environ: dict[str, str], account: Account) -> None:
    status, output = audit_json(
        stack_environ, "--user", f"{account.prefix}-*", "--exempt-user", f"{account.prefix}-svc-*"
    )
    assert status == 10
    assert {(f["user"], f["rule"], f["key"]) for f in output["findings"]} == account.findings
    assert {e["user"]: e["reason"] for e in output["exempt"]} == account.exempt
    suppressed = {e["user"]: e["suppressed_rules"] for e in output["exempt"]}
    assert suppressed[f"{account.prefix}-svc-robot"] == [TOO_OLD, UNUSED]
    summary = output["summary"]
    assert summary["users"] == account.users and summary["exempt_users"] == 2
    assert summary["compliant_users"] == 4 and summary["findings"] == len(account.findings)
    assert 0 <= output["report_age_seconds"] < 120
    assert all(f["cis"] and f["cis"][0]["versions"] == "v1.4.0-v3.0.0" for f in output["findings"])


def test_a_compliant_scope_exits_zero_and_still_lists_exempt_users(
    stack_environ: dict[str, str], account: Account
) -> None:
    status, output = audit_json(stack_environ, "--user", f"{account.prefix}-ok-*")
    assert status == 0
    assert output["findings"] == [] and [e["user"] for e in output["exempt"]] == [f"{account.prefix}-ok-tagged"]
    assert output["summary"]["compliant_users"] == 4


def test_without_an_exempt_tag_tagged_users_are_audited(stack_environ: dict[str, str], account: Account) -> None:
    status, output = audit_json(stack_environ, "--user", f"{account.prefix}-ok-tagged", "--exempt-tag", "")
    assert status == 10 and output["exempt"] == []
    assert {f["rule"] for f in output["findings"]} == {TOO_OLD, UNUSED}


def test_thresholds_from_the_environment_and_options(stack_environ: dict[str, str], account: Account) -> None:
    env = {**stack_environ, "KEYROTOR_AUDIT_MAX_KEY_AGE_DAYS": "250", "KEYROTOR_AUDIT_EXEMPT_USERS": "*-svc-*"}
    status, output = audit_json(env, "--user", f"{account.prefix}-old", "--user", f"{account.prefix}-svc-robot")
    assert status == 0 and [e["user"] for e in output["exempt"]] == [f"{account.prefix}-svc-robot"]
    status, output = audit_json(env, "--user", f"{account.prefix}-old", "--max-age-days", "150")
    assert status == 10 and [f["rule"] for f in output["findings"]] == [TOO_OLD]


def test_the_table_shows_findings_exemptions_counts_and_the_report_age(
    stack_environ: dict[str, str], account: Account
) -> None:
    result = keyrotor_cli({**stack_environ, "COLUMNS": "160"}, "audit", "--user", f"{account.prefix}-*", timeout=60)
    assert result.returncode == 10, result.stderr
    assert "credential report generated" in result.stdout and "exempt" in result.stdout
    assert f"{account.prefix}-never-used" in result.stdout
    assert f"{len(CASES)} users: 4 compliant" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--max-age-days", "0"), {}), ((), {"KEYROTOR_AUDIT_UNUSED_DAYS": "often"})],
)
def test_bad_input_exits_2_with_a_clear_error(
    stack_environ: dict[str, str], args: tuple[str, ...], env: dict[str, str]
) -> None:
    status, output = audit_json({**stack_environ, **env}, *args)
    assert status == 2
    assert output["error"] == "ConfigurationError" and "invalid audit settings" in output["message"]


def test_an_unreachable_aws_exits_8(stack_environ: dict[str, str]) -> None:
    env = {**stack_environ, "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:9", "KEYROTOR_AWS_MAX_ATTEMPTS": "1"}
    status, output = audit_json(env)
    assert status == 8 and output["error"] == "AwsUnavailable" and "cannot reach AWS" in output["message"]


@pytest.fixture(scope="module")
def fresh_iam() -> Iterator[Any]:
    """An IAM client on a moto server of this test process alone, with the keyrotor wrapper's IAM answers."""
    server = create_server(LOOPBACK, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield boto3.client(
            "iam",
            endpoint_url=f"http://{LOOPBACK}:{server.server_port}",
            region_name="us-east-1",
            aws_access_key_id="keyrotor-local-admin",
            aws_secret_access_key="keyrotor-local-admin",
        )
    finally:
        server.shutdown()


def test_tags_are_read_across_pages_and_the_report_is_dated(fresh_iam: Any) -> None:
    """Tags come from GetAccountAuthorizationDetails pages (1,000 users at most each) read while the report is
    fetched: every tagged user on every page is exempt, and the report is today's."""
    endpoint = fresh_iam.meta.endpoint_url
    prefix = f"page{uuid.uuid4().hex[:6]}"
    users = [SeedUser(f"{prefix}-{i:04d}", tags={"n": str(i)} if i % 7 == 0 else {}) for i in range(2100)]
    seed_users(endpoint, users)
    result = audit_account(fresh_iam, AuditPolicy(exempt_tag="n"), timedelta(seconds=30))
    exempt = {entry.user: entry.reason for entry in result.exempt if entry.user.startswith(prefix)}
    assert set(exempt) == {f"{prefix}-{i:04d}" for i in range(0, 2100, 7)}
    assert all("n" in reason for reason in exempt.values())
    assert abs(result.generated_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert result.users >= 2100
