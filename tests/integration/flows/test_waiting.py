"""Waiting holds nothing: a rotation that waits for its old key to go quiet is a suspended flow run and a record in
Vault's waiting index; the waker (in ``keyrotor serve``) looks at the old key when due and resumes the run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import WAITING
from keyrotor.core.model import Phase, Wait
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_cli
from tests.integration.support import (
    active_keys,
    assert_rotated,
    make_fleet,
    paused_run,
    processes_of,
    required,
    run_state,
    schedule_rotation,
    state_history,
    wait_for,
)

pytestmark = pytest.mark.integration


def parked(connections: Connections, user: str) -> Wait | None:
    return connections.waiting.read(connections.account_id, user)


def test_a_waiting_rotation_holds_no_process_and_is_woken_once_the_old_key_is_quiet(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("park")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    app = SimulatedApp(user, records, refresh=3, interval=0.25)  # keeps using the old key for about 3 s
    app.start()
    try:
        run_id = schedule_rotation(user, quiet_period="6s", poll_interval="1s")
        wait = wait_for(lambda: parked(connections, user), "the rotation to park")
        assert wait.flow_run_id == run_id and wait.key_id == old and not wait.held
        state = wait_for(lambda: (s := run_state(run_id)).is_paused() and s, "the run to suspend")
        assert state.name == WAITING and state.state_details.pause_timeout is None
        wait_for(lambda: not processes_of(run_id), "the parked run's process to exit", timeout=30)
        status = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)["outlook"]
        assert "holds no process" in status["doing"] and "next check at" in status["waiting_for"], status
        assert not status["needs_person"]
        wait_for(lambda: run_state(run_id).is_final(), "the woken run to finish", timeout=90)
    finally:
        stats = app.stop()
    assert run_state(run_id).is_completed(), run_state(run_id)
    assert_rotated(iam, connections, user, old)
    assert stats.errors == []
    assert parked(connections, user) is None, "the waiting record goes when the rotation moves on"
    final = required(records.load_state())
    assert final.phase is Phase.COMPLETED
    # Woken promptly: deactivated within poll interval + waker interval + a few seconds of the key going quiet.
    last_old_call = max(t for key, t in stats.switched_at.items() if key != old) - 0  # the app switched then
    assert final.published_at is not None
    quiet_since = max(final.published_at.timestamp(), last_old_call)
    assert final.deactivated_at is not None
    late = final.deactivated_at.timestamp() - (quiet_since + 6)
    assert late < 12, f"woken {late:.1f}s after the quiet period ended"
    history = list(reversed(state_history(records)))
    assert {s.new_key_id for s in history if s.new_key_id} == {final.new_key_id}
    assert datetime.now().year  # keep the import honest


def test_rotate_on_a_served_server_returns_once_the_new_key_is_published(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    import time

    user = user_factory("cli-park")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=10_000, interval=0.3)  # keeps the old key busy
    app.start()
    try:
        started = time.monotonic()
        result = keyrotor_cli(stack_environ, "rotate", user, "--quiet-period", "20s", "--poll-interval", "1s", "--json")
        took = time.monotonic() - started
    finally:
        app.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["phase"] == "published" and report["old_key_id"] == old and report["new_key_id"]
    assert "holds no process" in report["outlook"]["doing"] and "next check at" in report["outlook"]["waiting_for"]
    assert took < 20, f"returned after {took:.0f}s: it should not wait for the quiet period"
    assert "Started flow run" in result.stderr and "phase published" in result.stderr
    assert run_state(report["flow_run_id"]).name == WAITING


def test_rotate_on_a_served_server_with_wait_follows_it_to_the_end(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("cli-wait")
    old = active_keys(iam, user)[0]
    result = keyrotor_cli(stack_environ, "rotate", user, "--quiet-period", "3s", "--poll-interval", "1s", "--wait")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "completed" in result.stdout
    assert_rotated(iam, connections, user, old)


def remediate_fleet(stack_environ: dict[str, str], prefix: str, *extra: str) -> dict[str, Any]:
    result = keyrotor_cli(stack_environ, "remediate", "--json", "--user", f"{prefix}*", *extra, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture
def old_fleet(iam: Any, connections: Connections, stack_environ: dict[str, str]) -> tuple[str, list[str]]:
    return make_fleet(iam, connections, stack_environ, 4, "fleet")


def test_a_fleet_waits_in_parallel_without_a_process_per_waiting_rotation_and_a_second_remediation_adds_none(
    iam: Any,
    connections: Connections,
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
    old_fleet: tuple[str, list[str]],
) -> None:
    import time

    prefix, users = old_fleet
    quiet = 8
    started = time.monotonic()
    report = remediate_fleet(stack_environ, prefix, "--quiet-period", f"{quiet}s", "--poll-interval", "1s")
    returned = time.monotonic() - started
    outcomes = {o["user"]: o for o in report["outcomes"]}
    assert {outcomes[u]["outcome"] for u in users} == {"started"}, outcomes
    assert returned < quiet, f"remediate held on for {returned:.0f}s; it must not babysit the waits"
    runs = {u: outcomes[u]["flow_run_id"] for u in users}

    second = remediate_fleet(stack_environ, prefix, "--quiet-period", f"{quiet}s", "--poll-interval", "1s")
    again = {o["user"]: o for o in second["outcomes"]}
    assert {again[u]["outcome"] for u in users} <= {"in-progress", "already started"}, again
    for user in users:
        if again[user]["outcome"] == "already started":
            assert again[user]["flow_run_id"] == runs[user], "the same run, found again"

    wait_for(lambda: all(parked(connections, u) for u in users), "every rotation to park", timeout=120)
    parked_at = time.monotonic()
    wait_for(lambda: not any(processes_of(r) for r in runs.values()), "every parked run's process to exit", timeout=30)
    assert all(run_state(r).name == WAITING for r in runs.values())
    fleet = json.loads(keyrotor_cli(stack_environ, "fleet-status", "--json", "--user", f"{prefix}*").stdout)
    assert fleet["summary"]["counts"] == {"waiting": len(users)}, fleet["summary"]
    assert all(r["next_check_at"] for r in fleet["rotations"])

    wait_for(lambda: all(run_state(r).is_final() for r in runs.values()), "every rotation to finish", timeout=180)
    makespan = time.monotonic() - started
    assert all(run_state(r).is_completed() for r in runs.values())
    for user in users:  # each one woken promptly after its own quiet period, and rotated once
        history = state_history(connections.records(user))
        assert len({s.rotation_id for s in history}) == 1, f"{user} was rotated twice"
        state = history[0]
        assert state.phase is Phase.COMPLETED and state.deactivated_at is not None and state.published_at is not None
        late = (state.deactivated_at - state.published_at).total_seconds() - quiet
        assert late < 20, f"{user} deactivated {late:.1f}s after its quiet period ended"
    print(f"fleet of {len(users)}: parked after {parked_at - started:.1f}s, all rotated after {makespan:.1f}s")


def test_pause_while_parked_holds_it_past_its_quiet_period_and_resume_finishes_it(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    import time

    user = user_factory("park-pause")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    run_id = schedule_rotation(user, quiet_period="5s", poll_interval="1s")
    wait_for(lambda: parked(connections, user) and run_state(run_id).name == WAITING, "the rotation to park")
    paused = keyrotor_cli(stack_environ, "pause", user)
    assert paused.returncode == 0, paused.stderr
    assert required(parked(connections, user)).held and paused_run(records) == run_id
    wait_for(lambda: not processes_of(run_id), "the paused run's process to exit", timeout=30)
    assert not required(records.lease.read_lease()).data.owner, "it holds nothing"
    second = keyrotor_cli(stack_environ, "rotate", user, "--local")
    assert second.returncode == 4 and "paused" in second.stderr, "a paused rotation blocks another one"
    time.sleep(3 + 3)  # the quiet period passes, and three waker intervals: the waker must leave it alone
    assert run_state(run_id).is_paused() and run_state(run_id).name == "Suspended"
    assert required(connections.records(user).load_state()).phase is Phase.PUBLISHED
    outlook = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)["outlook"]
    assert outlook["command"] == f"keyrotor resume {user}" and outlook["needs_person"]
    resumed = keyrotor_cli(stack_environ, "resume", user)
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: run_state(run_id).is_final(), "the resumed rotation to finish", timeout=90)
    assert run_state(run_id).is_completed()
    assert_rotated(iam, connections, user, old)
    assert required(records.load_state()).pause is None
    history = list(reversed(state_history(records)))
    assert {s.new_key_id for s in history if s.new_key_id} == {history[-1].new_key_id}, "one new key, never two"
    ranks = [s.phase.rank for s in history]
    assert ranks == sorted(ranks), "phases never went backwards"
    assert [s.phase for s in history if s.pause] == [Phase.PUBLISHED]


def test_resume_of_a_rotation_that_only_waits_says_it_is_not_paused(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("park-noresume")
    run_id = schedule_rotation(user, quiet_period="60s", poll_interval="1s", max_wait="120s")
    wait_for(lambda: parked(connections, user) and run_state(run_id).name == WAITING, "the rotation to park")
    result = keyrotor_cli(stack_environ, "resume", user)
    assert result.returncode == 3 and "is not paused" in result.stderr and "next check at" in result.stderr
    rollback = keyrotor_cli(
        stack_environ, "rollback", user, "--json", "--now"
    )  # the rollback's wait is not the subject
    assert rollback.returncode == 0, rollback.stderr[-3000:]
    report = json.loads(rollback.stdout)
    assert report["phase"] == "rolled_back" and run_id in report["rollback"]["cancelled_runs"]
    assert run_state(run_id).is_cancelled() and parked(connections, user) is None
