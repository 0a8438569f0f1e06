"""In-memory stand-ins for IAM, Vault KV v2 and Prefect's runs, for the fast unit layer: :class:`FakeIam` is an
:class:`~keyrotor.adapters.iam.IamGateway`, :class:`FakeKV` a :class:`~keyrotor.adapters.vault.KVStore`,
:class:`FakeRuns` a :class:`~keyrotor.adapters.prefect_runs.RunControl`; :class:`FakeClock` moves only when told."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import StateType
from pydantic import SecretStr

from keyrotor.adapters.prefect_runs import RunView
from keyrotor.adapters.vault import KVRecord
from keyrotor.core.errors import (
    AwsUnavailable,
    CreateAnswerLost,
    KeyNotAccepted,
    PreconditionFailed,
    RotationConflict,
    TransientError,
)
from keyrotor.core.model import AccessKey, KeyStatus, LastUsed, NewCredentials
from keyrotor.core.pickup import Pickup

_ids = itertools.count(1)


class FakeIam:
    """IAM's key rules (two keys at most) in memory; ``verifies`` decides whether new keys authenticate."""

    def __init__(self, verifies: bool = True) -> None:
        self.users: dict[str, dict[str, AccessKey]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, str] = {}
        self.used: dict[str, LastUsed] = {}
        self.verifies = verifies
        self.sts_down = False
        self.iam_down = False  # last_used raises AwsUnavailable (an outage)
        self.looks: list[str] = []  # every GetAccessKeyLastUsed, by key id
        self.lost_create_answers = 0

    def add_user(self, name: str, keys: int = 1) -> list[str]:
        self.users[name] = {}
        return [self.create_key(name).key_id for _ in range(keys)]

    def account_id(self) -> str:
        return "123456789012"

    def credentials(self, key_id: str) -> NewCredentials:
        """A key's id and secret, as an application holds them."""
        return NewCredentials(key_id, SecretStr(self.secrets[key_id]))

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
        if self.iam_down:
            raise AwsUnavailable("cannot reach IAM")
        self.looks.append(key_id)
        return self.used.get(key_id, LastUsed(key_id, None))

    def user_tags(self, user_name: str) -> dict[str, str]:
        self.ensure_user(user_name)
        return dict(self.tags.get(user_name, {}))

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


class FakeRuns:
    """Prefect's flow runs in memory (a :class:`~keyrotor.adapters.prefect_runs.RunControl`): what the waker and the
    operator's commands do to them is recorded, and a test moves them between states as Prefect would."""

    server = "http://prefect.test/api"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.runs: dict[str, RunView] = {}
        self.deployment_of: dict[str, str] = {}
        self.resumed: list[str] = []
        self.rescheduled: list[str] = []
        self.cancelled: list[str] = []
        self.artifacts: dict[str, str] = {}

    def add(
        self,
        run_id: str,
        state: StateType,
        name: str = "",
        *,
        deployment: str = "rotate-access-key/rotate-access-key",
        **fields: Any,
    ) -> RunView:
        names = {StateType.PAUSED: "Suspended", StateType.RUNNING: "Running", StateType.SCHEDULED: "Scheduled"}
        run = RunView(
            id=run_id,
            name=f"run {run_id}",
            state=state,
            state_name=name or names.get(state, state.value.capitalize()),
            timestamp=self.clock.now,
            deployment_id=deployment,
            **fields,
        )
        self.runs[run_id] = run
        self.deployment_of[run_id] = deployment
        return run

    def move(self, run_id: str, state: StateType, name: str, **fields: Any) -> None:
        self.runs[run_id] = dataclasses.replace(
            self.runs[run_id], state=state, state_name=name, timestamp=self.clock.now, **fields
        )

    def read(self, run_id: str) -> RunView | None:
        return self.runs.get(run_id)

    def resume(self, run_id: str, run_input: dict[str, Any] | None = None) -> bool:
        run = self.runs[run_id]
        if run.state is not StateType.PAUSED:
            return False
        self.resumed.append(run_id)
        self.move(run_id, StateType.SCHEDULED, "Resuming", pause_timeout=None)
        return True

    def suspend(self, run_id: str, timeout: timedelta | None = None, *, force: bool = False) -> None:
        until = self.clock.now + timeout if timeout else None
        self.move(run_id, StateType.PAUSED, "Suspended", pause_timeout=until, message="")

    def never_expire(self, run: RunView) -> None:
        self.move(run.id, StateType.PAUSED, run.state_name, pause_timeout=None)

    def reschedule(self, run_id: str, reason: str, at: datetime) -> None:
        self.rescheduled.append(run_id)
        self.move(run_id, StateType.SCHEDULED, reason)

    def cancel(self, run_id: str, reason: str) -> None:
        self.cancelled.append(run_id)
        self.move(run_id, StateType.CANCELLED, "Cancelled", message=reason)

    def runs_of(self, deployments: Sequence[str], states: Sequence[StateType], limit: int = 200) -> list[RunView]:
        found = [run for run in self.runs.values() if self.deployment_of[run.id] in deployments and run.state in states]
        return found[:limit]

    def publish_markdown(self, key: str, markdown: str, description: str) -> None:
        self.artifacts[key] = markdown

    def pickup(self, deployment: str) -> Pickup:
        return Pickup(deployment, None)
