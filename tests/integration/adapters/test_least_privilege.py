"""keyrotor under the IAM policies it ships, with moto enforcing them: rotate, audit and remediate work, and a call
outside the policies is refused.

moto 5.2.5 checks IAM user actions against the resource ``*`` only (see ../shared/facts.md), so it runs here with
the shipped policies' actions on ``*``: this proves the actions are enough. Their scoping (the account, the
``keyrotor:managed`` tag, the Deny on keyrotor's own user) is proved by tests/unit/test_policies.py, which
evaluates the documents themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from keyrotor.stack.seed import SeedKey, SeedUser, seed_users
from keyrotor.stack.services import LocalStack, StackPorts
from tests.conftest import OUTPUT, ROOT
from tests.helpers import keyrotor_cli

pytestmark = pytest.mark.integration

SETUP_CALLS = 6  # the IAM calls below that create keyrotor's identity; moto enforces policies after them


def moto_variant(name: str) -> str:
    """The shipped policy's Allow statements, on the resource ``*`` (all that moto can evaluate)."""
    policy = json.loads((ROOT / "policies" / name).read_text())
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": s["Action"], "Resource": "*"} for s in allows],
        }
    )


@pytest.fixture(scope="module")
def enforcing(stack_environ: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A moto of its own that enforces IAM policies once keyrotor's identity exists; yields keyrotor's env."""
    import os

    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_CALLS)
    try:
        stack = LocalStack.start(OUTPUT / "least-privilege", StackPorts(0, 0, 0), services=("moto",))
    finally:
        del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        endpoint = stack.env["AWS_ENDPOINT_URL"]
        admin = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=stack.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=stack.env["AWS_SECRET_ACCESS_KEY"],
        )
        admin.create_user(UserName="keyrotor")
        for name in ("iam-policy.json", "iam-audit-policy.json"):
            arn = admin.create_policy(PolicyName=name.removesuffix(".json"), PolicyDocument=moto_variant(name))
            admin.attach_user_policy(UserName="keyrotor", PolicyArn=arn["Policy"]["Arn"])
        key = admin.create_access_key(UserName="keyrotor")["AccessKey"]  # call 6: enforcement starts
        now = datetime.now(UTC)
        old = SeedKey(created=now - timedelta(days=120), last_used=now - timedelta(days=2))
        seed_users(
            endpoint, [SeedUser("lp-rotate", (old,)), SeedUser("lp-fleet-1", (old,)), SeedUser("lp-fleet-2", (old,))]
        )
        env = {
            **{k: v for k, v in stack_environ.items() if k != "PREFECT_API_URL"},
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "PREFECT_HOME": str(OUTPUT / "least-privilege" / "prefect-home"),
        }
        yield {"env": env, "admin_endpoint": endpoint, "key": key}
    finally:
        stack.stop(purge=True)


def test_rotate_works_with_the_rotation_policy(enforcing: dict[str, Any]) -> None:
    result = keyrotor_cli(enforcing["env"], "rotate", "lp-rotate", "--local", "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["phase"] == "completed"


def test_audit_and_remediate_work_with_the_two_policies(enforcing: dict[str, Any]) -> None:
    audit = keyrotor_cli(enforcing["env"], "audit", "--json", "--user", "lp-fleet-*")
    assert audit.returncode == 10, audit.stderr[-3000:]  # findings, not an AWS error
    assert {f["user"] for f in json.loads(audit.stdout)["findings"]} == {"lp-fleet-1", "lp-fleet-2"}
    remediated = keyrotor_cli(enforcing["env"], "remediate", "--json", "--user", "lp-fleet-*", timeout=300)
    assert remediated.returncode == 0, remediated.stderr[-3000:]
    assert {o["outcome"] for o in json.loads(remediated.stdout)["outcomes"]} == {"completed"}


@pytest.mark.parametrize(
    ("service", "call"),
    [
        ("iam", lambda client: client.create_user(UserName="intruder")),
        (
            "iam",
            lambda client: client.attach_user_policy(
                UserName="keyrotor", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
            ),
        ),
        ("iam", lambda client: client.list_roles()),
    ],
    ids=["CreateUser", "AttachUserPolicy", "ListRoles"],
)
def test_anything_else_is_refused(enforcing: dict[str, Any], service: str, call: Callable[[Any], Any]) -> None:
    env = enforcing["env"]
    client = boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    with pytest.raises(ClientError) as refused:
        call(client)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


ORG_SETUP_CALLS = 14  # the calls of the fixture below; moto enforces policies after them


@pytest.fixture(scope="module")
def enforcing_organization(stack_environ: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A moto of its own with an organization: keyrotor's user in the management account holds the management
    policy (and the audit policy, to audit that account too); each member account has the role keyrotor assumes,
    holding the rotation and audit policies. moto enforces them all after the setup."""
    import os

    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(ORG_SETUP_CALLS)
    try:
        stack = LocalStack.start(OUTPUT / "least-privilege-org", StackPorts(0, 0, 0), services=("moto",))
    finally:
        del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        endpoint = stack.env["AWS_ENDPOINT_URL"]
        admin = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": stack.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": stack.env["AWS_SECRET_ACCESS_KEY"],
        }
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="keyrotor")  # 1
        for name in ("org-management-policy.json", "iam-audit-policy.json"):  # 2-5
            arn = iam.create_policy(PolicyName=name.removesuffix(".json"), PolicyDocument=moto_variant(name))
            iam.attach_user_policy(UserName="keyrotor", PolicyArn=arn["Policy"]["Arn"])
        key = iam.create_access_key(UserName="keyrotor")["AccessKey"]  # 6
        orgs = boto3.client("organizations", **admin)
        orgs.create_organization(FeatureSet="ALL")  # 7
        member = orgs.create_account(AccountName="member", Email="m@example.com")["CreateAccountStatus"][
            "AccountId"
        ]  # 8
        creds = boto3.client("sts", **admin).assume_role(  # 9
            RoleArn=f"arn:aws:iam::{member}:role/setup", RoleSessionName="setup"
        )["Credentials"]
        inside = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        trust = (ROOT / "policies" / "org-member-role-trust.json").read_text()
        trust = trust.replace("MANAGEMENT_ACCOUNT_ID", "123456789012").replace("KEYROTOR_USER", "keyrotor")
        trust = trust.replace("EXTERNAL_ID", "keyrotor-test-external-id")
        # The role AWS (and moto) creates in a new member account; keyrotor's trust policy replaces its default one.
        inside.update_assume_role_policy(RoleName="OrganizationAccountAccessRole", PolicyDocument=trust)  # 10
        for name in ("iam-policy.json", "iam-audit-policy.json"):  # 11-14: enforcement starts after the last
            arn = inside.create_policy(PolicyName=name.removesuffix(".json"), PolicyDocument=moto_variant(name))
            inside.attach_role_policy(RoleName="OrganizationAccountAccessRole", PolicyArn=arn["Policy"]["Arn"])
        now = datetime.now(UTC)
        old = SeedKey(created=now - timedelta(days=120), last_used=now - timedelta(days=2))
        seed_users(endpoint, [SeedUser("org-lp", (old,)), SeedUser("org-lp-rotate", (old,))], account_id=member)
        env = {
            **{k: v for k, v in stack_environ.items() if k != "PREFECT_API_URL"},
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "PREFECT_HOME": str(OUTPUT / "least-privilege-org" / "prefect-home"),
            "KEYROTOR_EXTERNAL_ID": "keyrotor-test-external-id",
        }
        yield {"env": env, "member": member}
    finally:
        stack.stop(purge=True)


def test_an_organization_audit_and_a_member_rotation_work_with_the_organization_policies(
    enforcing_organization: dict[str, Any],
) -> None:
    env, member = enforcing_organization["env"], enforcing_organization["member"]
    audit = keyrotor_cli(env, "audit", "--organization", "--json", "--user", "org-lp*")
    assert audit.returncode == 10, audit.stderr[-3000:]  # findings in the member account; every account audited
    report = json.loads(audit.stdout)
    assert report["not_audited"] == [] and {f["account_id"] for f in report["findings"]} == {member}
    rotated = keyrotor_cli(env, "rotate", "org-lp-rotate", "--account", member, "--local", "--json", timeout=300)
    assert rotated.returncode == 0, rotated.stderr[-3000:]
    assert json.loads(rotated.stdout)["account_id"] == member


def test_outside_the_organization_policies_calls_are_refused(enforcing_organization: dict[str, Any]) -> None:
    env, member = enforcing_organization["env"], enforcing_organization["member"]
    own = {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": "us-east-1",
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    with pytest.raises(ClientError) as refused:
        boto3.client("iam", **own).create_user(UserName="intruder")  # the management account: not keyrotor's to change
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    creds = boto3.client("sts", **own).assume_role(
        RoleArn=f"arn:aws:iam::{member}:role/OrganizationAccountAccessRole", RoleSessionName="keyrotor-test"
    )["Credentials"]
    inside = boto3.client(
        "iam",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    calls: tuple[Callable[[], Any], ...] = (
        lambda: inside.create_user(UserName="intruder"),
        lambda: inside.list_roles(),
    )
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
