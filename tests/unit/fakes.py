"""In-memory stand-ins for IAM and Vault KV v2, for the fast unit layer: :class:`FakeIam` is an
:class:`~keyrotor.adapters.iam.IamGateway`, :class:`FakeKV` a :class:`~keyrotor.adapters.vault.KVStore`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from keyrotor.adapters.vault import KVRecord
from keyrotor.core.errors import CreateAnswerLost, KeyNotAccepted, PreconditionFailed, RotationConflict, TransientError
from keyrotor.core.model import AccessKey, KeyStatus, LastUsed, NewCredentials

_ids = itertools.count(1)


class FakeIam:
    """IAM's key rules (two keys at most) in memory; ``verifies`` decides whether new keys authenticate."""

    def __init__(self, verifies: bool = True) -> None:
        self.users: dict[str, dict[str, AccessKey]] = {}
        self.secrets: dict[str, str] = {}
        self.used: dict[str, LastUsed] = {}
        self.verifies = verifies
        self.sts_down = False
        self.lost_create_answers = 0

    def add_user(self, name: str, keys: int = 1) -> list[str]:
        self.users[name] = {}
        return [self.create_key(name).key_id for _ in range(keys)]

    def account_id(self) -> str:
        return "123456789012"

    def ensure_user(self, user_name: str) -> None:
        if user_name not in self.users:
            raise PreconditionFailed(f"IAM user {user_name!r} does not exist")

    def list_keys(self, user_name: str) -> list[AccessKey]:
        return sorted(self.users[user_name].values(), key=lambda key: key.created)

    def create_key(self, user_name: str) -> NewCredentials:
        if len(self.users[user_name]) >= 2:
            raise PreconditionFailed("LimitExceeded")
        key_id = f"AKIAFAKE{next(_ids):012d}"
        self.users[user_name][key_id] = AccessKey(key_id, KeyStatus.ACTIVE, datetime.now(UTC))
        self.secrets[key_id] = f"secret-{key_id}"
        if self.lost_create_answers:
            self.lost_create_answers -= 1
            raise CreateAnswerLost("the connection dropped after IAM created the key")
        return NewCredentials(key_id, SecretStr(self.secrets[key_id]))

    def set_status(self, user_name: str, key_id: str, status: KeyStatus) -> None:
        key = self.users[user_name][key_id]
        self.users[user_name][key_id] = AccessKey(key.key_id, status, key.created)

    def delete_key(self, user_name: str, key_id: str) -> None:
        del self.users[user_name][key_id]

    def last_used(self, key_id: str) -> LastUsed:
        return self.used.get(key_id, LastUsed(key_id, None))

    def caller_arn(self, credentials: NewCredentials) -> str:
        if self.sts_down:
            raise TransientError("cannot reach STS")
        if not self.verifies:
            raise KeyNotAccepted("not accepted yet")
        user = next(name for name, keys in self.users.items() if credentials.key_id in keys)
        return f"arn:aws:iam::123456789012:user/{user}"


class FakeKV:
    """KV v2 versions and check-and-set, in memory."""

    mount = "secret"
    addr = "memory://"

    def __init__(self) -> None:
        self.paths: dict[str, list[dict[str, Any] | None]] = {}
        self.lost_answers = 0  # the next writes land, but their answers are lost and the retry meets them

    def check(self, retry_for: timedelta | None = None) -> None:
        return None

    def read(self, path: str, version: int | None = None) -> KVRecord | None:
        versions = self.paths.get(path) or []
        if not versions:
            return None
        number = version or len(versions)
        data = versions[number - 1]
        return None if data is None else KVRecord(dict(data), number, "2026-01-01T00:00:00.000000001Z")

    def current_version(self, path: str) -> int:
        return len(self.paths.get(path) or [])

    def write(self, path: str, data: dict[str, Any], cas: int | None) -> KVRecord:
        if cas is not None and cas != self.current_version(path):
            raise RotationConflict("check-and-set failed")
        self.paths.setdefault(path, []).append(dict(data))
        if self.lost_answers:
            self.lost_answers -= 1
            raise RotationConflict("check-and-set failed")  # what the retry of a write that landed meets
        return KVRecord(dict(data), self.current_version(path), "2026-01-01T00:00:00Z")

    def list(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = set()
        for key in self.paths:
            if key.startswith(prefix) and self.paths[key]:
                rest = key[len(prefix) :]
                names.add(rest.split("/")[0] + "/" if "/" in rest else rest)
        return sorted(names)

    def keep_versions(self, path: str, count: int) -> None:
        return None

    def destroy(self, path: str) -> None:
        self.paths.pop(path, None)


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.on_sleep: list[Callable[[], None]] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        for callback in self.on_sleep:
            callback()
