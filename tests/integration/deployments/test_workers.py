"""Workers, as README's production path has them: ``prefect deploy --all`` from the checkout, a process work pool
with a concurrency limit, two ``prefect worker`` processes started in folders of their own (a worker needs the
package installed, not the checkout), and ``keyrotor waker`` beside them. A worker killed with ``kill -9`` together
with its flow-run processes, while one rotation works and the others wait: every rotation finishes, no run is left
Running, and a rotation started afterwards gets a slot at once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import Phase
from keyrotor.deployments.table import NAMES, REMEDIATE, ROTATE, SWEEP
from keyrotor.stack.services import LocalStack, StackPorts, stop_stack
from tests.conftest import OUTPUT, ROOT
from tests.helpers import keyrotor_cli, stop_process
from tests.integration.support import (
    active_keys,
    assert_rotated,
    descendants,
    make_fleet,
    processes_of,
    start_rotation,
    state_of,
    wait_for,
)

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))
KEYROTOR = str(Path(sys.executable).with_name("keyrotor"))
POOL_LIMIT = 2


def prefect(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def deployed(stack_environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """A Prefect server of the module's own (workers' deployments and `keyrotor serve`'s must not meet on one),
    the pool (with its limit) and `prefect deploy --all`, as README says; yields the workers' environment."""
    folder = OUTPUT / "workers-prefect"
    own = LocalStack.start(folder, StackPorts(0, 0, 0), services=("prefect",))
    env = {**stack_environ, "PREFECT_API_URL": own.env["PREFECT_API_URL"]}
    env |= {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    try:
        prefect(env, "work-pool", "create", "keyrotor", "--type", "process")
        prefect(env, "work-pool", "set-concurrency-limit", "keyrotor", str(POOL_LIMIT))
        prefect(env, "--no-prompt", "deploy", "--all")
        yield env
    finally:
        stop_stack(folder, purge=True)


class Worker:
    """``prefect worker start --pool keyrotor`` in a folder of its own (not the checkout)."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        folder = OUTPUT / name
        folder.mkdir(parents=True, exist_ok=True)
        self.log = (OUTPUT / f"{name}.log").open("w")
        command = [PREFECT, "worker", "start", "--pool", "keyrotor", "--name", name]
        self.process = subprocess.Popen(command, cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def runs(self, run_id: str) -> bool:
        """Whether this worker started the process carrying ``run_id``."""
        return any(pid in descendants(self.process.pid) for pid in processes_of(run_id))

    def kill(self) -> None:
        """SIGKILL the worker and every flow-run process it started, as losing its machine would."""
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)
        self.log.close()


def running_runs(env: dict[str, str]) -> list[Any]:
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(state=states))


def test_deploy_all_makes_the_deployments_of_the_table_with_their_schedules(deployed: dict[str, str]) -> None:
    with (
        temporary_settings(updates={PREFECT_API_URL: deployed["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        deployments = {d.name: d for d in client.read_deployments() if d.name in NAMES}
        pool = client.read_work_pool("keyrotor")
    assert set(deployments) == set(NAMES) and pool.concurrency_limit == POOL_LIMIT
    assert all(d.work_pool_name == "keyrotor" and d.pull_steps == [] for d in deployments.values()), (
        "nothing binds the deploying machine's folder"
    )
    assert all(d.entrypoint and d.entrypoint.startswith("keyrotor.flows.") for d in deployments.values())
    (sweep,) = deployments[SWEEP.name].schedules
    assert isinstance(sweep.schedule, IntervalSchedule) and sweep.schedule.interval == SWEEP.interval and sweep.active
    (daily,) = deployments[REMEDIATE.name].schedules
    assert isinstance(daily.schedule, CronSchedule) and daily.schedule.cron == REMEDIATE.cron
    assert not daily.active, "the daily remediation of the whole account stays off until an operator turns it on"


def test_a_killed_worker_loses_no_rotation_leaves_no_run_running_and_no_slot_taken(
    iam: Any, connections: Connections, stack_environ: dict[str, str], deployed: dict[str, str]
) -> None:
    _, users = make_fleet(iam, connections, stack_environ, 3, "workers")
    stalled = make_fleet(iam, connections, stack_environ, 1, "stall")[1][0]  # stays Running a while after verify
    old = {user: active_keys(iam, user)[0] for user in [*users, stalled]}
    env = deployed | {"KEYROTOR_STALL": "saved-verified:15:stall-"}
    workers = [Worker(env, "worker-a"), Worker(env, "worker-b")]
    waker_log = (OUTPUT / "waker.log").open("w")
    waker = subprocess.Popen([KEYROTOR, "waker"], cwd=OUTPUT, env=env, stdout=waker_log, stderr=subprocess.STDOUT)
    try:
        runs = {user: start_rotation(env, user, quiet_period="5s") for user in users}
        wait_for(
            lambda: all(connections.waiting.read(connections.account_id, u) for u in users), "every rotation to park"
        )
        busy = start_rotation(env, stalled, quiet_period="5s")
        doomed = wait_for(lambda: next((w for w in workers if w.runs(busy)), None), "a worker to run the busy rotation")
        wait_for(lambda: (s := connections.records(stalled).load_state()) and s.phase is Phase.VERIFIED, "the stall")
        doomed.kill()  # mid-step, with the other rotations parked
        killed_at = time.monotonic()
        everything = {**runs, stalled: busy}
        wait_for(
            lambda: all(state_of(env, run).is_final() for run in everything.values()),
            "every rotation to finish on the surviving worker",
            timeout=240,
        )
        recovered_after = time.monotonic() - killed_at
        assert all(state_of(env, run).is_completed() for run in everything.values())
        assert running_runs(env) == [], "no run is left Running after its process died"
        late = make_fleet(iam, connections, stack_environ, 1, "late")[1][0]
        started = time.monotonic()
        after = start_rotation(env, late, quiet_period="2s")
        wait_for(
            lambda: state_of(env, after).type in (StateType.RUNNING, StateType.PAUSED, StateType.COMPLETED),
            "a slot",
            timeout=60,
        )
        slot_after = time.monotonic() - started
    finally:
        stop_process(waker)
        waker_log.close()
        for worker in workers:
            worker.stop()
    for user in [*users, stalled]:
        assert_rotated(iam, connections, user, old[user])
    print(
        f"killed worker: every rotation finished {recovered_after:.0f}s later; a new rotation got a slot after {slot_after:.1f}s"
    )


def test_rotate_says_when_the_work_pool_is_full_and_leaves_its_run_queued(
    iam: Any, connections: Connections, stack_environ: dict[str, str], deployed: dict[str, str]
) -> None:
    """Workers poll the pool but its slots are all taken (here: a limit of 0): `keyrotor rotate` does not say that
    nothing runs its deployment; it says the pool is full, which limit to raise, and that its run stays queued."""
    user = make_fleet(iam, connections, stack_environ, 1, "full")[1][0]
    env = deployed | {"KEYROTOR_PICKUP_TIMEOUT": "5s"}
    worker = Worker(env, "worker-c")
    try:
        wait_for(lambda: served_by_a_worker(env), "the worker to poll the pool")
        prefect(env, "work-pool", "set-concurrency-limit", "keyrotor", "0")
        full = keyrotor_cli(env, "rotate", user, "--quiet-period", "2s")
        said = " ".join(full.stderr.split())
        assert full.returncode == 9, said
        # An earlier test's run may still hold a slot (a killed worker's run stays Running until it is crashed):
        # the count of busy runs is whatever the server says, the limit is the one set here.
        assert re.search(r"work pool keyrotor is full: \d+ of 0 slots", said) and "stays queued" in said, said
        assert "set-concurrency-limit keyrotor" in said and "worker-c" in said
    finally:
        prefect(env, "work-pool", "set-concurrency-limit", "keyrotor", str(POOL_LIMIT))
        worker.stop()


def served_by_a_worker(env: dict[str, str]) -> bool:
    from keyrotor.adapters.prefect_api import served

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        return served(ROTATE.full_name)
