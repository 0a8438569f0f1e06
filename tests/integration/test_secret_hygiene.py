"""After rotations, no secret access key is anywhere Prefect or keyrotor writes: database, results, logs, output."""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

from keyrotor.adapters.connections import Connections
from keyrotor.stack.services import LocalStack
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.conftest import CLIENT_HOME, OUTPUT
from tests.helpers import keyrotor_cli
from tests.integration.hygiene import files_containing, secrets_ever_published, where_secrets_are
from tests.integration.support import required

pytestmark = pytest.mark.integration


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
    assert where_secrets_are(stack, every_secret, tmp_path) == []

    run_id = UUID(json.loads(result.stdout)["last_flow_run_id"])
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))[0]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert run.parameters == {
        "request": {
            "user_name": user,
            "account_id": "",
            "quiet_period": "2s",
            "poll_interval": "0.5s",
            "max_wait": "30s",
            "grace_period": "0s",
            "accept_unsafe_quiet_period": False,
            "require_approval": False,
            "force": False,
        }
    }, "the parameters Prefect keeps are the request: names and timings, never a secret"
    assert len(logs) > 5, "the flow's logs should have reached the server"
    assert all(secret not in log.message for log in logs for secret in secrets)
    assert any(new.key_id in log.message for log in logs)
