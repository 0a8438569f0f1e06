"""Build the real gateways (boto3, hvac) from settings, in one place."""

from __future__ import annotations

import getpass
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from functools import cached_property

import boto3

from keyrotor.adapters.accounts import RoleToAssume, assumed_session
from keyrotor.adapters.cloudtrail import Boto3Trail, TrailGateway
from keyrotor.adapters.iam import Boto3Iam, IamGateway
from keyrotor.adapters.records import RotationRecords, UserPaths, WaitingIndex
from keyrotor.adapters.vault import KVStore, VaultKV, make_client
from keyrotor.adapters.vault_auth import Authenticator, VaultLogin
from keyrotor.core.inputs import ACCOUNT_ID_PATTERN
from keyrotor.settings import Settings

ACCOUNT = re.compile(ACCOUNT_ID_PATTERN.strip("^$"), re.ASCII)


@dataclass
class Connections:
    """The IAM gateway and the KV mount for one keyrotor process, in one AWS account.

    :meth:`for_account` gives the connections of another account: the same Vault, IAM through the role keyrotor
    assumes there (``KEYROTOR_ROLE_NAME``).
    """

    settings: Settings
    iam: IamGateway
    kv: KVStore
    session: boto3.Session | None = None
    account: str | None = None
    _accounts: dict[tuple[str, str], Connections] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Connections:
        """The process's connections for these settings, built once and shared (boto3 and hvac clients are
        thread-safe; building a boto3 client costs tens of milliseconds of CPU, which a fleet pays per user)."""
        settings = settings or Settings()
        key = (
            settings.model_dump_json(),
            settings.token(),
            tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_"))),
        )
        with _SHARED_LOCK:
            if (shared := _SHARED.get(key)) is None:
                token = settings.token() if settings.vault_auth == "token" else None
                client = make_client(settings.vault_addr, token, settings.vault_namespace)
                secret_id = settings.vault_secret_id.get_secret_value() if settings.vault_secret_id else None
                auth = Authenticator(client, vault_login(settings), secret_id)
                kv = VaultKV(client, settings.vault_mount, retry_for=settings.vault_retry_timeout, auth=auth)
                session = boto3.Session()
                iam = Boto3Iam(session, max_attempts=settings.aws_max_attempts, retry_for=settings.aws_retry_timeout)
                shared = _SHARED[key] = cls(settings, iam, kv, session)
            return shared

    @cached_property
    def account_id(self) -> str:
        return self.account or self.iam.account_id()

    def for_account(self, account_id: str | None, purpose: str = "run") -> Connections:
        """These connections in ``account_id`` (None or the caller's own: these); ``purpose`` names the assumed
        role's session (``keyrotor-<purpose>``), so CloudTrail says what keyrotor was doing there."""
        if account_id is None or account_id == self.account_id:
            return self
        key = (account_id, purpose)
        with _SHARED_LOCK:
            if key not in self._accounts:
                role = RoleToAssume(self.settings.role_name, self.settings.external_id)
                session = assumed_session(
                    self.session or boto3.Session(), account_id, role, purpose, self.settings.aws_max_attempts
                )
                iam = Boto3Iam(
                    session, max_attempts=self.settings.aws_max_attempts, retry_for=self.settings.aws_retry_timeout
                )
                self._accounts[key] = Connections(self.settings, iam, self.kv, session, account_id)
            return self._accounts[key]

    def accounts_with_records(self) -> list[str]:
        """The accounts keyrotor has rotation records for in Vault (its state folders)."""
        root = self.settings.state_path.split("{account_id}")[0].rstrip("/")
        return sorted(name.rstrip("/") for name in self.kv.list(root) if ACCOUNT.fullmatch(name.rstrip("/")))

    @cached_property
    def trail(self) -> TrailGateway:
        """CloudTrail's record of who used a key, in this account."""
        return Boto3Trail(self.session or boto3.Session(), self.account_id, self.settings.aws_max_attempts)

    @cached_property
    def waiting(self) -> WaitingIndex:
        return WaitingIndex(self.kv, self.settings.waiting_path)

    def iam_in(self, account_id: str, purpose: str = "waker") -> IamGateway:
        """The IAM gateway in ``account_id`` (this account's, or through the role keyrotor assumes there)."""
        return self.for_account(account_id, purpose).iam

    def records(self, user_name: str, account_id: str | None = None) -> RotationRecords:
        """A user's records in Vault, in this account or (only Vault is read) ``account_id``."""
        account = account_id or self.account_id
        paths = UserPaths.build(self.settings.vault_path, self.settings.state_path, account, user_name)
        return RotationRecords(self.kv, paths)

    def users_with_records(self, account_id: str) -> list[str]:
        """The users of an account keyrotor has a record folder for."""
        folder = self.settings.state_path.format(account_id=account_id, user_name="").rstrip("/")
        return sorted(name.rstrip("/") for name in self.kv.list(folder))


def vault_login(settings: Settings) -> VaultLogin:
    """The Vault login the settings describe."""
    return VaultLogin(
        method=settings.vault_auth,
        mount=settings.vault_auth_mount,
        role=settings.vault_role,
        role_id=settings.vault_role_id,
        secret_id_file=settings.vault_secret_id_file,
        jwt_file=settings.vault_jwt_file,
    )


_SHARED: dict[tuple[object, ...], Connections] = {}
_SHARED_LOCK = threading.Lock()


def whoami() -> str:
    """``user@host pid N``: who is acting, for the state record and the lease."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"
