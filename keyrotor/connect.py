"""Build the real gateways (boto3, hvac) from settings, in one place."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from functools import cached_property

from keyrotor.aws import Boto3Iam, IamGateway
from keyrotor.records import RotationRecords, UserPaths
from keyrotor.settings import Settings
from keyrotor.vault import VaultKV, make_client


@dataclass
class Connections:
    """The IAM gateway and the KV mount for one keyrotor process."""

    settings: Settings
    iam: IamGateway
    kv: VaultKV

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Connections:
        settings = settings or Settings()
        client = make_client(settings.vault_addr, settings.token(), settings.vault_namespace)
        kv = VaultKV(client, settings.vault_mount, retry_for=settings.vault_retry_timeout)
        return cls(settings, Boto3Iam(max_attempts=settings.aws_max_attempts), kv)

    @cached_property
    def account_id(self) -> str:
        return self.iam.account_id()

    def records(self, user_name: str) -> RotationRecords:
        paths = UserPaths.build(self.settings.vault_path, self.settings.state_path, self.account_id, user_name)
        return RotationRecords(self.kv, paths)


def whoami() -> str:
    """``user@host pid N``: who is acting, for the state record and the lease."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"
