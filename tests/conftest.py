"""Shared fixtures: one local stack (moto IAM/STS, OpenBao, Prefect server) for the whole session.

Everything runs on free loopback ports; logs and Prefect's files go to ``test-output/`` so a failing CI run
can be read afterwards, and so the secret-hygiene test can scan them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported lazily below: Prefect must not be imported before its settings are pointed here
    from keyrotor.adapters.connections import Connections
    from keyrotor.stack.services import LocalStack

ROOT = Path(__file__).resolve().parent.parent
# KEYROTOR_TEST_OUTPUT lets two pytest sessions share a checkout without wiping each other's servers.
BASE_OUTPUT = Path(os.environ.get("KEYROTOR_TEST_OUTPUT", ROOT / "test-output"))
# With pytest-xdist each worker has a stack of its own, in a folder of its own (gw0, gw1...).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
OUTPUT = BASE_OUTPUT / WORKER if WORKER else BASE_OUTPUT
CLIENT_HOME = OUTPUT / "prefect-client"

# Prefect reads its settings when first imported: point its client home into test-output before that. The
# controller of a parallel run wipes the whole folder once; each worker wipes its own.
shutil.rmtree(OUTPUT if WORKER else BASE_OUTPUT, ignore_errors=True)
CLIENT_HOME.mkdir(parents=True)
os.environ["PREFECT_HOME"] = str(CLIENT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# rich sizes its consoles from COLUMNS when they are made (keyrotor's, at import): a width inherited from the
# terminal that started the tests (or set for pytest-xdist's workers) would wrap and cut what the tests read.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
os.environ.pop("PREFECT_API_URL", None)

# Short timings for tests; real defaults are hours to days.
FAST = {
    "KEYROTOR_LEASE_TTL": "2s",
    "KEYROTOR_VAULT_RETRY_TIMEOUT": "1s",
    "KEYROTOR_AWS_RETRY_TIMEOUT": "1s",
    "KEYROTOR_VERIFY_TIMEOUT": "20s",
    "KEYROTOR_QUIET_PERIOD": "2s",
    "KEYROTOR_POLL_INTERVAL": "0.5s",
    "KEYROTOR_MAX_WAIT": "30s",
    "KEYROTOR_GRACE_PERIOD": "0s",
    "KEYROTOR_WAKER_INTERVAL": "1s",
    # A served run parks only for a wait that cannot end within 2 s: the default quiet period (2s) is waited in the
    # run's process, and tests of parking wait 5 s or more.
    "KEYROTOR_PARK_AFTER": "2s",
    "KEYROTOR_SERVE_LIMIT": "8",
}


#: Where the served rotations of ``stall-*`` users stall, and for how long (see the ``served`` fixture).
STALL = "saved-verified:8:stall-"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the secret-hygiene scan last, so it scans what every other test left behind."""
    items.sort(key=lambda item: "test_secret_hygiene" in item.nodeid)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """The real servers, started once for the session and stopped after it."""
    from keyrotor.stack.services import LocalStack, StackPorts

    with LocalStack.start(OUTPUT / "stack", StackPorts(moto=0, vault=0, prefect=0)) as running:
        yield running


@pytest.fixture(scope="session")
def stack_environ(stack: LocalStack) -> dict[str, str]:
    """The environment a keyrotor process needs to work against the local stack, with fast timings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "VAULT_", "KEYROTOR_")) and key != "COLUMNS"
    }
    env.update(stack.env)
    env.update(FAST)
    return env


@pytest.fixture(scope="session")
def prefect_api(stack_environ: dict[str, str]) -> Iterator[str]:
    """Point this process's Prefect client at the stack's Prefect server."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = stack_environ["PREFECT_API_URL"]
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
        APILogWorker.drain_all(timeout=10)  # send in-process flow logs before the server stops


@pytest.fixture
def local_env(stack_environ: dict[str, str], prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run in-process keyrotor code against the stack (AWS, Vault, fast timings via the environment)."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "VAULT_", "KEYROTOR_")):
            monkeypatch.delenv(key)
    for key, value in stack_environ.items():
        if key.startswith(("AWS_", "VAULT_", "KEYROTOR_", "BAO_")):
            monkeypatch.setenv(key, value)
    return stack_environ


@pytest.fixture
def connections(local_env: dict[str, str]) -> Connections:
    from keyrotor.adapters.connections import Connections

    return Connections.from_settings()


@pytest.fixture
def iam(local_env: dict[str, str]) -> Any:  # a boto3 IAM client: boto3 ships no type information
    import boto3

    return boto3.client("iam")


@pytest.fixture
def user_factory(iam: Any, connections: Connections) -> Callable[..., str]:
    """Create a uniquely named IAM user with keys; the first active key is published to Vault like apps expect."""
    from pydantic import SecretStr

    from keyrotor.core.model import NewCredentials

    def make(prefix: str = "user", keys: int = 1, inactive: int = 0, publish: bool = True) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        created = [iam.create_access_key(UserName=name)["AccessKey"] for _ in range(keys)]
        for key in created[len(created) - inactive :]:
            iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
        if publish and created:
            first = created[0]
            credentials = NewCredentials(first["AccessKeyId"], SecretStr(first["SecretAccessKey"]))
            connections.records(name).publish(credentials, cas=0)
        return name

    return make


@pytest.fixture(scope="session")
def served(stack_environ: dict[str, str], prefect_api: str) -> Iterator[subprocess.Popen[str]]:
    """``keyrotor serve`` in the background, as a newcomer runs it, until its deployments are registered. Rotations
    of users named ``stall-*`` stay Running for 8 s after their new key is verified, so the browser test can press
    the UI's Suspend on a running rotation."""
    from prefect.client.orchestration import get_client

    from keyrotor.deployments.table import NAMES
    from tests.helpers import stop_process

    env = {**stack_environ, "KEYROTOR_STALL": STALL}
    log = (OUTPUT / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "keyrotor", "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        with get_client(sync_client=True) as client:
            deadline = time.time() + 90
            while True:
                assert process.poll() is None, (OUTPUT / "serve.log").read_text()[-3000:]
                names = {d.name for d in client.read_deployments()}
                if set(NAMES) <= names:
                    break
                assert time.time() < deadline, names
                time.sleep(0.5)
        yield process
    finally:
        stop_process(process)
        log.close()
