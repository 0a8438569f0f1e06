"""Build the real gateways (boto3, hvac) from settings, in one place."""

from __future__ import annotations

import getpass
import os
import socket
import threading
from dataclasses import dataclass
from functools import cached_property

from keyrotor.aws import Boto3Iam, IamGateway
from keyrotor.records import RotationRecords, UserPaths, WaitingIndex
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
                client = make_client(settings.vault_addr, settings.token(), settings.vault_namespace)
                kv = VaultKV(client, settings.vault_mount, retry_for=settings.vault_retry_timeout)
                iam = Boto3Iam(max_attempts=settings.aws_max_attempts, retry_for=settings.aws_retry_timeout)
                shared = _SHARED[key] = cls(settings, iam, kv)
            return shared

    @cached_property
    def account_id(self) -> str:
        return self.iam.account_id()

    @cached_property
    def waiting(self) -> WaitingIndex:
        return WaitingIndex(self.kv, self.settings.waiting_path)

    def records(self, user_name: str) -> RotationRecords:
        paths = UserPaths.build(self.settings.vault_path, self.settings.state_path, self.account_id, user_name)
        return RotationRecords(self.kv, paths)


_SHARED: dict[tuple[object, ...], Connections] = {}
_SHARED_LOCK = threading.Lock()


def whoami() -> str:
    """``user@host pid N``: who is acting, for the state record and the lease."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"
