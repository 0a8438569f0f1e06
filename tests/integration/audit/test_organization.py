"""An AWS Organization on the local moto: audit every account (one refusing keyrotor's role), remediate two member
accounts, and rotate a member account's user from the Prefect UI's deployment with the account as a parameter."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import synchronous
from keyrotor.stack.seed import SeedKey, SeedUser, refuse_assume_role, seed_users
from tests.helpers import keyrotor_cli
from tests.integration.support import required, rotation_parameters

pytestmark = pytest.mark.integration


def member_session(stack_environ: dict[str, str], account: str) -> boto3.Session:
    """The test's own way into a member account (what keyrotor's role would see there)."""
    sts = boto3.client(
        "sts",
        endpoint_url=stack_environ["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=stack_environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_environ["AWS_SECRET_ACCESS_KEY"],
    )
    role = f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole"
    creds = sts.assume_role(RoleArn=role, RoleSessionName="test")["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def organization(stack_environ: dict[str, str]) -> dict[str, Any]:
    """The session moto's organization (created once), with three new member accounts: two keyrotor can enter,
    one whose role refuses it. Each member has a user with a 120-day-old key last used two days ago."""
    orgs = boto3.client(
        "organizations",
        endpoint_url=stack_environ["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=stack_environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_environ["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        orgs.describe_organization()
    except ClientError:
        orgs.create_organization(FeatureSet="ALL")
    run = uuid.uuid4().hex[:6]
    accounts = [
        orgs.create_account(AccountName=f"{name}-{run}", Email=f"{name}-{run}@example.com")["CreateAccountStatus"][
            "AccountId"
        ]
        for name in ("team-a", "team-b", "locked")
    ]
    refuse_assume_role(stack_environ["AWS_ENDPOINT_URL"], [accounts[2]])
    now = datetime.now(UTC)
    old = SeedKey(created=now - timedelta(days=120), last_used=now - timedelta(days=2))
    fresh = SeedKey(created=now - timedelta(days=3), last_used=now - timedelta(hours=2))
    user = f"org-{run}"
    for account in accounts:
        seed_users(
            stack_environ["AWS_ENDPOINT_URL"],
            [SeedUser(user, (old,)), SeedUser(f"{user}-fine", (fresh,)), SeedUser(f"{user}-ui", (old,))],
            account_id=account,
        )
    return {"accounts": accounts, "user": user, "management": "123456789012"}


def test_an_organization_audit_reports_each_account_and_the_one_that_refused(
    organization: dict[str, Any], stack_environ: dict[str, str]
) -> None:
    team_a, team_b, locked = organization["accounts"]
    user = organization["user"]
    result = keyrotor_cli(stack_environ, "audit", "--organization", "--json", "--user", f"{user}*")
    assert result.returncode == 11, result.stderr[-3000:]  # findings, and an account not audited
    report = json.loads(result.stdout)
    flagged = {(f["account_id"], f["user"], f["rule"]) for f in report["findings"]}
    assert (team_a, user, "key-too-old") in flagged and (team_b, user, "key-too-old") in flagged
    assert all(account != locked for account, _, _ in flagged)
    assert {a["account_id"] for a in report["accounts"]} >= {team_a, team_b, organization["management"]}
    refused = {item["account_id"]: item["reason"] for item in report["not_audited"]}
    assert set(refused) == {locked} and "cannot assume" in refused[locked] and "AccessDenied" in refused[locked]
    assert report["summary"]["accounts_not_audited"] == 1

    table = keyrotor_cli(
        {**stack_environ, "COLUMNS": "200"}, "audit", "--account", team_a, "--account", locked, "--user", f"{user}*"
    )
    assert (
        table.returncode == 11
        and f"account {team_a}" in table.stdout
        and f"account {locked} not audited" in table.stderr
    )


def test_a_member_account_session_reuses_the_parsed_botocore_data_and_acts_in_that_account(
    organization: dict[str, Any], stack_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each account's session shares the caller's loader: parsing botocore's data files again per account was most
    of an organization audit's time (bench/audit_organization.py: 2.35x a single account before, 1.31x after)."""
    from keyrotor.adapters.accounts import RoleToAssume, assumed_session

    team_a = organization["accounts"][0]
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack_environ["AWS_ENDPOINT_URL"])
    base = boto3.session.Session(
        aws_access_key_id=stack_environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    member = assumed_session(base, team_a, RoleToAssume(), "test")
    loader = base._session.get_component("data_loader")  # noqa: SLF001
    assert member._session.get_component("data_loader") is loader  # noqa: SLF001
    sts = member.client("sts")
    assert sts.get_caller_identity()["Account"] == team_a


def test_bad_account_ids_are_bad_input(stack_environ: dict[str, str]) -> None:
    for args in (("audit", "--account", "12345"), ("rotate", "alice", "--account", "not-an-account", "--local")):
        result = keyrotor_cli(stack_environ, *args)
        assert result.returncode == 2 and "is not an AWS account id" in result.stderr, (args, result.stderr)


def test_a_remediation_across_two_member_accounts_rotates_each_in_its_own_vault_paths(
    organization: dict[str, Any], stack_environ: dict[str, str], connections: Connections, tmp_path: Path
) -> None:
    team_a, team_b, _ = organization["accounts"]
    user = organization["user"]
    env = {k: v for k, v in stack_environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    result = keyrotor_cli(
        env,
        "remediate",
        "--json",
        "--account",
        team_a,
        "--account",
        team_b,
        "--user",
        user,
        "--quiet-period",
        "2s",
        "--poll-interval",
        "1s",
        "--grace-period",
        "0s",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = {(o["account_id"], o["user"]): o for o in json.loads(result.stdout)["outcomes"]}
    assert {key: o["outcome"] for key, o in outcomes.items()} == {
        (team_a, user): "completed",
        (team_b, user): "completed",
    }
    for account in (team_a, team_b):
        records = connections.records(user, account)
        assert records.paths.secret == f"aws/{account}/{user}" and records.paths.state.startswith(
            f"keyrotor/{account}/"
        )
        state = required(records.load_state())
        assert state.account_id == account and state.phase.value == "completed"
        iam = member_session(stack_environ, account).client("iam", endpoint_url=stack_environ["AWS_ENDPOINT_URL"])
        keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        assert keys == [required(records.published()).key_id] == [state.new_key_id]


def test_a_member_account_rotation_from_the_deployment_with_the_account_as_a_parameter(
    organization: dict[str, Any],
    stack_environ: dict[str, str],
    connections: Connections,
    served: subprocess.Popen[str],
    prefect_api: str,
) -> None:
    team_a = organization["accounts"][0]
    user = f"{organization['user']}-ui"
    run = synchronous(
        run_deployment(
            "rotate-access-key/rotate-access-key",
            parameters=rotation_parameters(user, account_id=team_a),
            timeout=180,
            poll_interval=1,
        )
    )
    assert run.state is not None and run.state.is_completed(), run.state
    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(run.id)
    assert finished.name == f"rotate {user} in {team_a}"
    assert f"account:{team_a}" in finished.tags and f"user:{user}" in finished.tags
    state = required(connections.records(user, team_a).load_state())
    assert state.phase.value == "completed" and state.account_id == team_a
    assert required(connections.records(user, team_a).published()).key_id == state.new_key_id
