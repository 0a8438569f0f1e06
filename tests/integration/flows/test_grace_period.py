"""A grace period: the old key is deactivated now and deleted later by a scheduled flow run of delete-old-key."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import synchronous
from keyrotor.core.model import Phase
from tests.helpers import keyrotor_cli
from tests.integration.support import active_keys, all_keys, assert_rotated, required

pytestmark = pytest.mark.integration


def test_old_key_is_deleted_by_a_scheduled_run_after_the_grace_period(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("grace")
    old = active_keys(iam, user)[0]
    result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--grace-period", "12s", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "deactivated" and report["deletion_run_id"]
    assert all_keys(iam, user)[old] == "Inactive"

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(report["deletion_run_id"]))
    assert run.state is not None
    assert run.state.is_scheduled() or run.state.is_pending()  # the runner may have prefetched it already
    expected_start = required(run.expected_start_time, "the deletion run's expected start time")
    assert abs((datetime.fromisoformat(report["delete_after"]) - expected_start).total_seconds()) < 1
    assert run.parameters == {"request": {"user_name": user, "account_id": connections.account_id}}
    assert run.name == f"delete old key of {user} in {connections.account_id}", "named for its user from its creation"
    assert f"user:{user}" in run.tags

    early = keyrotor_cli(stack_environ, "finish", user)
    assert early.returncode == 3 and "not before" in early.stderr
    assert old in all_keys(iam, user)

    deadline = time.time() + 90
    while old in all_keys(iam, user):
        assert time.time() < deadline, "the scheduled deletion never ran"
        time.sleep(1)
    assert_rotated(iam, connections, user, old)
    state = required(connections.records(user).load_state())
    deadline = time.time() + 30
    while state.phase is not Phase.COMPLETED and time.time() < deadline:
        time.sleep(0.5)
        state = required(connections.records(user).load_state())
    assert state.phase is Phase.COMPLETED and state.completed_at is not None and state.delete_after is not None
    assert state.completed_at >= state.delete_after


def test_finish_deletes_when_due_without_a_served_deployment(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("finish")
    old = active_keys(iam, user)[0]
    env = {**stack_environ, "KEYROTOR_DELETE_DEPLOYMENT": "no-such/deployment"}
    result = keyrotor_cli(env, "rotate", user, "--local", "--grace-period", "2s", "--json")
    assert result.returncode == 0, result.stderr
    assert f"keyrotor finish {user}" in result.stdout  # says how the deletion will happen
    time.sleep(2)
    finished = keyrotor_cli(env, "finish", user, "--json")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["phase"] == "completed"
    assert_rotated(iam, connections, user, old)


def test_the_sweep_finishes_a_due_deletion_whose_scheduled_run_was_lost(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    local_env: dict[str, str],
) -> None:
    from keyrotor.flows.finish_due import finish_due_deletions

    user = user_factory("sweep")
    old = active_keys(iam, user)[0]
    env = {**stack_environ, "KEYROTOR_DELETE_DEPLOYMENT": "no-such/deployment"}  # as if the run were lost
    result = keyrotor_cli(env, "rotate", user, "--local", "--grace-period", "1s")
    assert result.returncode == 0, result.stderr
    time.sleep(1.5)
    report = finish_due_deletions()
    who = f"{connections.account_id}/{user}"
    assert who in report.finished and who not in report.failed
    assert_rotated(iam, connections, user, old)


def test_a_deletion_run_that_starts_a_little_early_waits_instead_of_failing(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
    prefect_api: str,
) -> None:
    from prefect.deployments import run_deployment

    user = user_factory("early")
    old = active_keys(iam, user)[0]
    result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--grace-period", "8s", "--json")
    assert result.returncode == 0, result.stderr
    delete_after = datetime.fromisoformat(json.loads(result.stdout)["delete_after"])
    early = synchronous(
        run_deployment(
            "delete-old-key/delete-old-key",
            parameters={"request": {"user_name": user}},
            scheduled_time=delete_after - timedelta(seconds=3),  # a runner starts it up to its prefetch (10 s) earlier
            timeout=120,
            poll_interval=1,
        )
    )
    assert early.state is not None and early.state.is_completed(), early.state
    assert old not in all_keys(iam, user)
    state = required(connections.records(user).load_state())
    assert state.phase is Phase.COMPLETED and state.completed_at is not None and state.delete_after is not None
    assert state.completed_at >= state.delete_after
    assert early.name == f"delete old key of {user}"
