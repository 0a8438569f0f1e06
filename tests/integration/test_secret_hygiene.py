"""After rotations, no secret access key is anywhere Prefect or keyrotor writes: database, results, logs, output."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

from keyrotor.adapters.connections import Connections
from keyrotor.stack import postgres
from keyrotor.stack.services import LocalStack
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.conftest import CLIENT_HOME, OUTPUT
from tests.helpers import keyrotor_cli
from tests.integration.support import required

pytestmark = pytest.mark.integration


def _views(data: bytes) -> list[bytes]:
    """The bytes as stored, plus their base64 decoding when they are base64 (Prefect stores pickles that way)."""
    views = [data]
    with contextlib.suppress(binascii.Error, ValueError):
        views.append(base64.b64decode(b"".join(data.split()), validate=True))
    return views


def files_containing(roots: list[Path], secrets: list[str]) -> list[str]:
    needles = [secret.encode() for secret in secrets]
    found = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            if any(needle in view for view in _views(path.read_bytes()) for needle in needles):
                found.append(str(path))
    return found


def secrets_ever_published(connections: Connections) -> list[str]:
    """Every secret access key this session published to Vault (every version of every user's secret path)."""
    folder = connections.settings.vault_path.format(account_id=connections.account_id, user_name="").rstrip("/")
    found = []
    for entry in connections.kv.list(folder):
        records = connections.records(entry.rstrip("/"))
        for version in range(1, records.kv.current_version(records.paths.secret) + 1):
            credentials = records.published_credentials(version)
            if credentials is not None:
                found.append(credentials.secret.get_secret_value())
    return found


def test_the_scanner_finds_a_secret_in_a_base64_pickle(tmp_path: Path) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    (tmp_path / "result").write_bytes(base64.b64encode(pickle.dumps({"value": secret})))
    (tmp_path / "clean").write_text("nothing here")
    assert files_containing([tmp_path], [secret]) == [str(tmp_path / "result")]


def test_no_secret_reaches_prefect_storage_logs_or_output(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack: LocalStack,
    stack_environ: dict[str, str],
    prefect_api: str,
    tmp_path: Path,
) -> None:
    user = user_factory("hygiene")
    records = connections.records(user)
    old_secret = required(records.published_credentials()).secret.get_secret_value()
    app = SimulatedApp(user, records, refresh=0.5)
    app.start()
    result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--json")
    app.stop()
    assert result.returncode == 0, result.stderr
    new = required(records.published_credentials())
    secrets = [old_secret, new.secret.get_secret_value()]
    assert len(secrets[1]) == 40

    assert all(secret not in result.stdout + result.stderr for secret in secrets)
    every_secret = secrets_ever_published(connections)
    assert set(secrets) <= set(every_secret) and len(every_secret) > 2
    # Everything the session wrote: Prefect servers' databases, result storage, service, serve and worker logs.
    assert (OUTPUT / "stack" / "prefect").is_dir() and any((OUTPUT / "stack" / "logs").iterdir())
    assert CLIENT_HOME.is_dir()
    # The Prefect server's PostgreSQL: its files as stored, and (since it compresses large values) a plain dump.
    data = stack.services["postgres"].data  # inside OUTPUT, or where nobody could reach it (root, private folder)
    assert data is not None and (data / "PG_VERSION").is_file()
    dump = tmp_path / "prefect-database.sql"
    port = stack.services["postgres"].port
    with dump.open("wb") as out:
        subprocess.run(
            [
                str(postgres.bin_dir() / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                postgres.USER,
                postgres.DATABASE,
            ],
            stdout=out,
            check=True,
            timeout=120,
        )
    assert dump.stat().st_size > 100_000 and b"flow_run" in dump.read_bytes()
    assert files_containing([OUTPUT, data, dump], every_secret) == []

    run_id = UUID(json.loads(result.stdout)["last_flow_run_id"])
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))[0]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert run.parameters == {
        "user_name": user,
        "quiet_period": None,
        "poll_interval": None,
        "max_wait": None,
        "grace_period": None,
        "require_approval": False,
        "accept_unsafe_quiet_period": False,
        "force": False,
        "account_id": None,
    }
    assert len(logs) > 5, "the flow's logs should have reached the server"
    assert all(secret not in log.message for log in logs for secret in secrets)
    assert any(new.key_id in log.message for log in logs)
