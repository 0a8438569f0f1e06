"""What several integration tests share: waiting for a condition, a user's active keys, the check that a rotation
ended well, a fleet of users, a runner process and a rotation started on it, and a rotation scheduled as the UI's
"Run" does, with its run's state and processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from uuid import UUID

import boto3
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import DeploymentStatus, State
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import synchronous
from keyrotor.adapters.records import RotationRecords
from keyrotor.core.model import RotationState, from_record
from keyrotor.deployments.table import NAMES
from tests.conftest import OUTPUT, ROOT

T = TypeVar("T")


def required(value: T | None, what: str = "a value") -> T:
    """``value``, which the test expects to be there (a record, a state): fails the test when it is None."""
    assert value is not None, f"expected {what}, found None"
    return value


def wait_for(predicate: Callable[[], T | Literal[False, ""] | None], what: str, timeout: float = 90) -> T:
    """Call ``predicate`` until it returns something true, and return that (so never None, False or "")."""
    deadline = time.time() + timeout
    while not (result := predicate()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def active_keys(iam: Any, user: str) -> list[str]:
    return [
        k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"] if k["Status"] == "Active"
    ]


def assert_rotated(iam: Any, connections: Connections, user: str, old_key_id: str) -> str:
    """Exactly one key, active, the one in Vault, and it works; the old key is gone."""
    keys = all_keys(iam, user)
    credentials = connections.records(user).published_credentials()
    assert credentials is not None
    assert keys == {credentials.key_id: "Active"}, keys
    assert credentials.key_id != old_key_id
    sts = boto3.client(
        "sts", aws_access_key_id=credentials.key_id, aws_secret_access_key=credentials.secret.get_secret_value()
    )
    assert sts.get_caller_identity()["Arn"].endswith(f":user/{user}")
    return credentials.key_id


def make_fleet(
    iam: Any, connections: Connections, stack_environ: dict[str, str], count: int, name: str
) -> tuple[str, list[str]]:
    """Users named ``<name>-<run>-<n>``, each with one 120-day-old key last used two days ago (so the quiet period
    runs from the publish), published in Vault; returns the name prefix and the users."""
    import uuid

    from pydantic import SecretStr

    from keyrotor.core.model import NewCredentials
    from keyrotor.stack.seed import backdate_key

    prefix = f"{name}-{uuid.uuid4().hex[:6]}-"
    now = datetime.now(UTC)
    users: list[str] = []
    for index in range(count):
        user = f"{prefix}{index}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        created, used = now - timedelta(days=120), now - timedelta(days=2)
        backdate_key(stack_environ["AWS_ENDPOINT_URL"], key["AccessKeyId"], created, used)
        connections.records(user).publish(NewCredentials(key["AccessKeyId"], SecretStr(key["SecretAccessKey"])), 0)
        users.append(user)
    return prefix, users


class Runner:
    """A `keyrotor serve` process against a server, logging to ``OUTPUT/<name>.log``; ``extra`` is added to its
    environment (a failpoint's stall, say)."""

    def __init__(
        self, env: dict[str, str], name: str, *, wake: bool = True, limit: int = 4, extra: dict[str, str] | None = None
    ) -> None:
        self.log = (OUTPUT / f"{name}.log").open("ab")
        waking = [] if wake else ["--no-wake"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keyrotor", "serve", "--limit", str(limit), *waking],
            env={**env, **(extra or {})},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.path = OUTPUT / f"{name}.log"
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            wait_for(lambda: self._ready(), f"{name} to serve the deployments", timeout=120)

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.path.read_text()[-3000:]
        with get_client(sync_client=True) as client:
            ready = {d.name for d in client.read_deployments() if d.status == DeploymentStatus.READY}
        return set(NAMES) <= ready

    def stop(self) -> None:
        if self.process.poll() is None:
            kill_tree(self.process)
        self.log.close()


def rotation_parameters(user: str, **fields: Any) -> dict[str, Any]:
    """A rotate-access-key run's parameters, as the UI's form sends them: the test timings unless given."""
    request = {"user_name": user, "quiet_period": "2s", "poll_interval": "1s", "max_wait": "30s", "grace_period": "0s"}
    return {"request": request | fields}


def start_rotation(env: dict[str, str], user: str, **fields: Any) -> str:
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        run = run_deployment(
            "rotate-access-key/rotate-access-key", parameters=rotation_parameters(user, **fields), timeout=0
        )
    return str(synchronous(run).id)


def state_of(env: dict[str, str], run_id: str) -> State:
    """The current state of a flow run on the server at ``env``'s PREFECT_API_URL."""
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        return run_state(run_id)


def schedule_rotation(user: str, **fields: Any) -> str:
    """What "Run" on the deployment does in the UI: a flow run of rotate-access-key, a moment from now."""
    run = run_deployment(
        "rotate-access-key/rotate-access-key",
        parameters=rotation_parameters(user, **fields),
        scheduled_time=datetime.now(UTC) + timedelta(seconds=1),
        timeout=0,
    )
    return str(synchronous(run).id)


def run_state(run_id: str) -> State:
    """The current state of a flow run on this process's Prefect server (every flow run has one)."""
    with get_client(sync_client=True) as client:
        return required(client.read_flow_run(UUID(run_id)).state, f"a state of flow run {run_id}")


def processes_of(run_id: str) -> list[int]:
    """Live processes carrying this flow run (Prefect passes the run id to the process it starts)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"PREFECT__FLOW_RUN_ID={run_id}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def all_keys(iam: Any, user: str) -> dict[str, str]:
    return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from the process table."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything it started, as losing its machine would."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    process.wait(timeout=30)


def paused_run(records: RotationRecords) -> str | None:
    """The flow run a user's rotation is paused in, as Vault records it."""
    state = records.load_state()
    return state.pause.run_id if state is not None and state.pause is not None else None


def state_history(records: RotationRecords, limit: int = 50) -> list[RotationState]:
    """The newest ``limit`` recorded versions of a user's rotation state in Vault, newest first."""
    current = records.kv.current_version(records.paths.state)
    history = []
    for version in range(current, max(0, current - limit), -1):
        record = records.kv.read(records.paths.state, version)
        if record is not None:
            history.append(from_record(RotationState, record.data, record.version))
    return history
