"""``prefect deploy --all`` with prefect.yaml, a process work pool and a worker, as README shows it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import synchronous
from keyrotor.deployments.table import NAMES, REMEDIATE, SWEEP
from keyrotor.stack.services import LocalStack, StackPorts
from tests.conftest import OUTPUT, ROOT
from tests.helpers import stop_process
from tests.integration.support import active_keys, assert_rotated, rotation_parameters

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))


def interval_of(schedule: object) -> tuple[timedelta, datetime]:
    """An interval schedule's interval and anchor (a schedule of another kind fails the test)."""
    assert isinstance(schedule, IntervalSchedule), schedule
    return schedule.interval, schedule.anchor_date


def cron_of(schedule: object) -> str:
    """A cron schedule's expression (a schedule of another kind fails the test)."""
    assert isinstance(schedule, CronSchedule), schedule
    return schedule.cron


def test_prefect_deploy_all_runs_a_rotation_on_a_process_worker(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker runs the rotation, which parks while its old key is unused for the quiet period, and the
    scheduled wake-rotations runs (every minute) wake it: nothing of `keyrotor serve` is involved."""
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "5")  # the server schedules runs sooner
    with LocalStack.start(OUTPUT / "deploy-stack", StackPorts(0, 0, 0), services=("prefect",)) as own:
        env = {**stack_environ, "PREFECT_API_URL": own.env["PREFECT_API_URL"], "PREFECT_WORKER_QUERY_SECONDS": "1"}
        for command in (["work-pool", "create", "keyrotor", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
            done = subprocess.run([PREFECT, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        log = (OUTPUT / "worker.log").open("w")
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "keyrotor"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            with temporary_settings(updates={PREFECT_API_URL: own.env["PREFECT_API_URL"]}):
                with get_client(sync_client=True) as client:
                    deployments = {d.name: d for d in client.read_deployments()}
                assert set(deployments) == set(NAMES)
                assert all(d.work_pool_name == "keyrotor" for d in deployments.values())
                sweep = [interval_of(s.schedule) for s in deployments[SWEEP.name].schedules]
                assert sweep == [(SWEEP.interval, SWEEP.anchor)]
                assert [cron_of(s.schedule) for s in deployments[REMEDIATE.name].schedules] == [REMEDIATE.cron]

                user = user_factory("deployed")
                old = active_keys(iam, user)[0]
                run = synchronous(
                    run_deployment(
                        "rotate-access-key/rotate-access-key",
                        parameters=rotation_parameters(user, poll_interval="0.5s"),
                        timeout=240,
                    )
                )
            assert run.state is not None and run.state.is_completed(), (
                run.state,
                (OUTPUT / "worker.log").read_text()[-3000:],
            )
            assert_rotated(iam, connections, user, old)
        finally:
            stop_process(worker)
            log.close()
