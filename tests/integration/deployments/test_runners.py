"""Rotations that wait outlive their runners and their Prefect server, share several runners, and survive an
operator's UI pause whose timeout passes. Each test here has a Prefect server of its own (the module's), so it can
restart it and run `keyrotor serve` processes against it without disturbing the session's server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import WAITING
from keyrotor.adapters.prefect_runs import EXPIRED_PAUSE, PrefectRuns
from keyrotor.core.model import Phase
from keyrotor.stack.faults import FaultProxy
from keyrotor.stack.services import LocalStack, StackPorts, read_stack
from tests.conftest import OUTPUT
from tests.helpers import keyrotor_cli, keyrotor_popen, stop_process
from tests.integration.support import (
    Runner,
    active_keys,
    assert_rotated,
    make_fleet,
    paused_run,
    start_rotation,
    state_history,
    state_of,
    wait_for,
)

pytestmark = pytest.mark.integration


def restart_prefect(down_for: float = 0) -> None:
    """Stop the module's Prefect server and, ``down_for`` seconds later, start it again (same port, same
    PostgreSQL database: a server on a new database would not know the runs)."""
    folder = OUTPUT / "own-prefect"
    recorded = read_stack(folder)
    assert recorded is not None
    port = recorded.services["prefect"].port
    LocalStack(recorded.stack_dir, recorded.vault_token, {"prefect": recorded.services["prefect"]}).stop()
    time.sleep(down_for)
    again = LocalStack.start(folder, StackPorts(0, 0, port), services=("prefect",))
    log = again.services["prefect"].log.read_text()[-3000:]
    assert again.services["prefect"].port == port and "postgres" in again.services, (again.notes, log)


def test_a_waiting_rotation_survives_its_runner_and_its_prefect_server_restarting(
    iam: Any, connections: Connections, user_factory: Callable[..., str], own_server: dict[str, str]
) -> None:
    user = user_factory("restart")
    old = active_keys(iam, user)[0]
    first = Runner(own_server, "runner-restart-1")
    try:
        run_id = start_rotation(own_server, user, quiet_period="15s")
        wait_for(lambda: connections.waiting.read(connections.account_id, user), "the rotation to park")
        wait_for(lambda: state_of(own_server, run_id).name == WAITING, "the run to suspend")
    finally:
        first.stop()  # the runner and everything it started are gone
    restart_prefect()
    second = Runner(own_server, "runner-restart-2")
    try:
        wait_for(lambda: state_of(own_server, run_id).is_final(), "the rotation to finish", timeout=120)
    finally:
        second.stop()
    assert state_of(own_server, run_id).is_completed()
    assert_rotated(iam, connections, user, old)


def test_a_ui_pause_whose_timeout_passed_can_still_be_resumed(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    own_server: dict[str, str],
) -> None:
    """The UI's Pause sets Suspended with a timeout (300 s by default) and Prefect fails the run when it passes:
    here it passes after 3 s, with no waker running to take the timeout off (the waker's repair is a unit test), and
    the operator who comes back later still resumes the rotation to its end."""
    user = user_factory("ui-expired")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    runner = Runner(
        own_server, "runner-ui-pause", wake=False, extra={"KEYROTOR_STALL": "saved-verified:6"}
    )  # stays Running
    waker: subprocess.Popen[str] | None = None
    try:
        run_id = start_rotation(own_server, user, quiet_period="5s")
        wait_for(lambda: (s := records.load_state()) is not None and s.phase is Phase.VERIFIED, "the busy run")
        with temporary_settings(updates={PREFECT_API_URL: own_server["PREFECT_API_URL"]}):
            PrefectRuns().suspend(run_id, timedelta(seconds=3))  # what the UI's Pause sends, with a short timeout
        wait_for(lambda: paused_run(records) == run_id, "the pause to be recorded", timeout=60)
        expired = wait_for(
            lambda: (s := state_of(own_server, run_id)).is_failed() and s,
            "Prefect to fail the expired pause",
            timeout=60,
        )
        assert EXPIRED_PAUSE in (expired.message or ""), expired
        resumed = keyrotor_cli(own_server, "resume", user)
        assert resumed.returncode == 0, resumed.stderr
        waker = keyrotor_popen(own_server, "waker")  # the resumed run parks for its quiet period: a waker wakes it
        wait_for(lambda: state_of(own_server, run_id).is_final(), "the resumed rotation to finish", timeout=120)
    finally:
        runner.stop()
        if waker is not None:
            stop_process(waker)
    assert state_of(own_server, run_id).is_completed()
    assert_rotated(iam, connections, user, old)


def test_two_runners_share_a_fleet_and_one_killed_loses_nothing(
    iam: Any, connections: Connections, stack_environ: dict[str, str], own_server: dict[str, str]
) -> None:
    prefix, users = make_fleet(iam, connections, stack_environ, 4, "runners")
    survivor = Runner(own_server, "runner-survivor", limit=2)
    doomed = Runner(own_server, "runner-doomed", limit=2)
    try:
        result = keyrotor_cli(
            own_server, "remediate", "--json", "--user", f"{prefix}*", "--quiet-period", "4s", "--poll-interval", "1s"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs = {o["user"]: o["flow_run_id"] for o in json.loads(result.stdout)["outcomes"]}
        wait_for(lambda: "Beginning flow run" in doomed.path.read_text(), "the doomed runner to take work")
        doomed.stop()  # mid-fleet: its flow runs die with it
        wait_for(
            lambda: all(state_of(own_server, run).is_final() for run in runs.values()),
            "every rotation to finish on the surviving runner",
            timeout=240,
        )
    finally:
        survivor.stop()
        doomed.stop()
    for user in users:
        assert state_of(own_server, runs[user]).is_completed(), (user, state_of(own_server, runs[user]))
        history = list(reversed(state_history(connections.records(user))))
        assert len({s.rotation_id for s in history}) == 1, f"{user} rotated twice"
        assert len({s.new_key_id for s in history if s.new_key_id}) == 1, f"{user} got two new keys"
        ranks = [s.phase.rank for s in history]
        assert ranks == sorted(ranks), f"{user}'s phases went backwards: {[s.phase.value for s in history]}"
        assert history[-1].phase is Phase.COMPLETED


#: Seconds IAM/STS, Vault and the Prefect server are all down at once. 20 s in `make test`: longer than every retry
#: that does not ride it out on purpose (botocore's, the lease's renewals, Prefect's first client retries), so it
#: proves the same as a longer one; KEYROTOR_TEST_OUTAGE=120 runs the two-minute outage of the benchmarks.
OUTAGE = float(os.environ.get("KEYROTOR_TEST_OUTAGE", "20"))


def outage_env(own_server: dict[str, str], iam_proxy: FaultProxy, vault_proxy: FaultProxy) -> dict[str, str]:
    """keyrotor behind the proxies, patient for longer than the outage (the shipped defaults: 5 min)."""
    patience = f"{int(OUTAGE * 2 + 20)}s"
    return {
        **own_server,
        "AWS_ENDPOINT_URL": iam_proxy.url,
        "VAULT_ADDR": vault_proxy.url,
        "KEYROTOR_AWS_RETRY_TIMEOUT": patience,
        "KEYROTOR_VAULT_RETRY_TIMEOUT": patience,
        "KEYROTOR_VERIFY_TIMEOUT": patience,
        "KEYROTOR_LEASE_TTL": "10s",
    }


def everything_down(iam_proxy: FaultProxy, vault_proxy: FaultProxy) -> None:
    """IAM/STS and Vault refuse keyrotor for OUTAGE seconds, and the Prefect server is stopped for as long."""
    iam_proxy.down(OUTAGE)
    vault_proxy.down(OUTAGE)
    restart_prefect(down_for=OUTAGE)


@pytest.mark.parametrize("when", ["during-the-wait", "during-a-step"])
def test_iam_vault_and_prefect_down_together_and_the_rotation_finishes_without_a_rerun(
    when: str,
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    own_server: dict[str, str],
) -> None:
    from keyrotor.stack.simulated_apps import SimulatedApp

    user = user_factory("outage")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    app = SimulatedApp(user, records, refresh=0.5)  # talks to moto and OpenBao directly: they stay up
    app.start()
    with (
        FaultProxy(stack_environ["AWS_ENDPOINT_URL"]) as iam_proxy,
        FaultProxy(stack_environ["VAULT_ADDR"], vault=True) as vault_proxy,
    ):
        env = outage_env(own_server, iam_proxy, vault_proxy)
        stall = {"KEYROTOR_STALL": "saved-created:3"} if when == "during-a-step" else {}
        runner = Runner(env, f"runner-outage-{when}", extra=stall)
        try:
            run_id = start_rotation(env, user, quiet_period="5s")
            if when == "during-the-wait":
                wait_for(lambda: connections.waiting.read(connections.account_id, user), "the rotation to park")
            else:  # stalled right after recording the new key: the outage starts before it is verified
                wait_for(lambda: (s := records.load_state()) is not None and s.phase is Phase.CREATED, "the step")
            everything_down(iam_proxy, vault_proxy)
            wait_for(
                lambda: state_of(env, run_id).is_final(),
                "the rotation to finish after the outage",
                timeout=OUTAGE + 240,
            )
        finally:
            runner.stop()
            stats = app.stop()
    assert state_of(own_server, run_id).is_completed(), state_of(own_server, run_id)
    assert_rotated(iam, connections, user, old)
    assert stats.errors == [], stats.errors[:3]
    history = list(reversed(state_history(records)))
    assert len({s.rotation_id for s in history}) == 1 and len({s.new_key_id for s in history if s.new_key_id}) == 1
