"""Which AWS accounts keyrotor works on, and a boto3 session in each.

The caller's own account is used with the caller's credentials. A member account is reached by assuming a role in
it (``KEYROTOR_ROLE_NAME``, default ``OrganizationAccountAccessRole``, with ``KEYROTOR_EXTERNAL_ID`` if the trust
policy asks for one); its credentials are fetched when the session is made and refreshed by botocore before they
expire, so a waker that runs for days never signs with an expired session. ``--organization`` means every ACTIVE
account that ``organizations:ListAccounts`` returns to the caller (the management account or a delegated
administrator). Imports nothing of Prefect: ``keyrotor audit`` starts fast.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from keyrotor.core.errors import AwsError, ConfigurationError

ACCOUNT_ID = re.compile(r"\d{12}")
_SESSION_NAME = re.compile(r"[^\w+=,.@-]")


@dataclass(frozen=True)
class RoleToAssume:
    """How keyrotor enters a member account."""

    role_name: str = "OrganizationAccountAccessRole"
    external_id: str | None = None


def check_account_id(value: str) -> str:
    """Return ``value`` if it is an AWS account id (12 digits), else raise ConfigurationError (exit 2)."""
    if not ACCOUNT_ID.fullmatch(value.strip()):
        raise ConfigurationError(f"{value!r} is not an AWS account id: it has 12 digits, e.g. 111122223333")
    return value.strip()


def session_name(purpose: str) -> str:
    """``keyrotor-<purpose>`` as AssumeRole accepts it (2 to 64 of letters, digits and ``+=,.@_-``)."""
    return _SESSION_NAME.sub("-", f"keyrotor-{purpose}")[:64]


def assumed_session(
    base: boto3.Session, account_id: str, role: RoleToAssume, purpose: str, max_attempts: int = 10
) -> boto3.Session:
    """A session in ``account_id`` through AssumeRole, refreshed before expiry; fails now (AwsError) if refused."""
    partition = "aws-us-gov" if (base.region_name or "").startswith("us-gov-") else "aws"
    arn = f"arn:{partition}:iam::{account_id}:role/{role.role_name}"
    extra: dict[str, str] = {"RoleSessionName": session_name(purpose)}
    if role.external_id:
        extra["ExternalId"] = role.external_id
    source = base.get_credentials()
    if source is None:
        raise AwsError("no AWS credentials found to assume roles with (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts})

    def create_client(service: str, **kwargs: object) -> object:
        return base.client(service, config=config, **kwargs)

    fetcher = AssumeRoleCredentialFetcher(create_client, source, arn, extra_args=extra)
    credentials = DeferredRefreshableCredentials(method="assume-role", refresh_using=fetcher.fetch_credentials)
    try:
        credentials.get_frozen_credentials()  # assume it now: a refusal is this account's error, said once
    except (ClientError, BotoCoreError) as error:
        code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
        raise AwsError(
            f"cannot assume {arn}{' with the external id' if role.external_id else ''} ({code or error}): check the "
            "role exists in that account, trusts keyrotor's identity (policies/org-member-role-trust.json) and that "
            "no SCP denies it"
        ) from None
    session = botocore.session.Session()
    # The base session's loader has parsed botocore's data files (endpoints, service models) already: a fresh one
    # per account would parse them again, about 80 ms of CPU per account (most of an organization audit's cost).
    session.register_component("data_loader", base._session.get_component("data_loader"))  # noqa: SLF001
    session._credentials = credentials  # noqa: SLF001 - botocore's documented way to plug in refreshable credentials
    if base.region_name:
        session.set_config_variable("region", base.region_name)
    return boto3.Session(botocore_session=session)


def organization_accounts(base: boto3.Session) -> list[str]:
    """Every ACTIVE account of the caller's organization (ListAccounts, paginated), sorted."""
    client = base.client("organizations", config=Config(retries={"mode": "standard", "max_attempts": 10}))
    found: list[str] = []
    try:
        for page in client.get_paginator("list_accounts").paginate():
            found += [item["Id"] for item in page["Accounts"] if item.get("Status", "ACTIVE") == "ACTIVE"]
    except (ClientError, BotoCoreError) as error:
        raise AwsError(
            f"cannot list the organization's accounts ({error}): --organization needs the management account's "
            "credentials (or a delegated administrator's) with organizations:ListAccounts "
            "(policies/org-management-policy.json)"
        ) from None
    return sorted(found)


_caller: dict[int, str] = {}
_caller_lock = threading.Lock()


def caller_account(base: boto3.Session) -> str:
    """The account of the caller's own credentials (GetCallerIdentity, once per session)."""
    with _caller_lock:
        if id(base) not in _caller:
            try:
                _caller[id(base)] = str(base.client("sts").get_caller_identity()["Account"])
            except (ClientError, BotoCoreError) as error:
                from keyrotor.adapters.iam import translate

                raise translate(error, "identify keyrotor's AWS account") from None
        return _caller[id(base)]


def resolve_accounts(base: boto3.Session, accounts: Sequence[str] = (), organization: bool = False) -> list[str]:
    """The accounts a command works on: ``--organization``'s, else the ``--account`` ids, else the caller's own."""
    if organization and accounts:
        raise ConfigurationError("use either --organization or --account, not both")
    if organization:
        return organization_accounts(base)
    if accounts:
        return sorted(dict.fromkeys(check_account_id(account) for account in accounts))
    return [caller_account(base)]
