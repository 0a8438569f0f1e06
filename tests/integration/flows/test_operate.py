"""Operating rotations as the Prefect UI does, against a real Prefect server with the deployments served:
schedule, suspend during the wait (the UI's own API call), resume, and roll back from every phase."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import PauseKind, Phase
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_cli, keyrotor_process
from tests.integration.support import (
    active_keys,
    all_keys,
    assert_rotated,
    paused_run,
    processes_of,
    required,
    run_state,
    schedule_rotation,
    state_history,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_approval_gate_pauses_with_the_evidence_then_approve_from_the_command_line(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("approval")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    run_id = schedule_rotation(user, quiet_period="2s", require_approval=True)
    pause = wait_for(lambda: (s := records.load_state()) is not None and s.pause, "the approval pause")
    assert pause.kind is PauseKind.APPROVAL and run_state(run_id).is_paused()
    assert set(all_keys(iam, user).values()) == {"Active"} and len(all_keys(iam, user)) == 2
    wait_for(lambda: not processes_of(run_id), "the suspended run's process to exit", timeout=30)
    keyset = required(run_state(run_id).state_details.run_input_keyset, "the approval's run input keyset")
    with get_client(sync_client=True) as client:
        description = client.read_flow_run_input(UUID(run_id), keyset["description"])
    assert old in description and ("never used" in description or "last used" in description)
    assert description.count(old) == 1 and "quiet period required: 2s" in description
    assert "- consumers (CloudTrail): no call with the old key seen" in description, description  # nothing used it

    # (Approve and reject through the UI's form: test_ui_browser.py.)
    answered = keyrotor_cli(stack_environ, "resume", user, "--approve", "--note", "checked the logs")
    assert answered.returncode == 0, answered.stderr
    wait_for(lambda: run_state(run_id).is_final(), "the answered run to finish", timeout=120)
    final = required(records.load_state())
    assert final.approval is not None and final.approval.answered_at is not None
    assert run_state(run_id).is_completed()
    assert_rotated(iam, connections, user, old)
    assert final.approval.note == "checked the logs" and "keyrotor resume" in final.approval.answered_by


def rollback_and_check(
    iam: Any, connections: Connections, stack_environ: dict[str, str], user: str, old: str, *options: str
) -> dict[str, Any]:
    """Roll back (waiting for the new key to go quiet, unless ``--now``), check the old key is back everywhere and
    the new key inactive, and that a second rollback changes nothing."""
    records = connections.records(user)
    before = required(records.load_state())
    result = keyrotor_cli(stack_environ, "rollback", user, "--json", "--wait", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["phase"] == "rolled_back"
    keys = all_keys(iam, user)
    assert keys[old] == "Active"
    if before.new_key_id in keys:
        assert keys[before.new_key_id] == "Inactive"
    credentials = required(records.published_credentials())
    assert credentials.key_id == old
    versions = records.kv.current_version(records.paths.secret)
    assert records.stashed() is None

    again = keyrotor_cli(stack_environ, "rollback", user, "--json", "--local")  # idempotent (in this process)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all_keys(iam, user) == keys and records.kv.current_version(records.paths.secret) == versions
    return report


@pytest.mark.parametrize("failpoint", ["saved-published"])  # before the publish: tests/unit/tasks/test_crash_matrix.py
def test_rollback_of_an_interrupted_rotation(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str], failpoint: str
) -> None:
    user = user_factory("rb-" + failpoint.split("-")[1])
    old = active_keys(iam, user)[0]
    killed = keyrotor_process({**stack_environ, "KEYROTOR_FAILPOINT": failpoint}, "rotate", user, "--local")
    assert killed.returncode == -signal.SIGKILL
    rollback_and_check(iam, connections, stack_environ, user, old)
    assert keyrotor_cli(stack_environ, "rotate", user, "--local").returncode == 0, (
        "a new rotation can start after a rollback"
    )


@pytest.mark.parametrize("failpoint", ["rollback-restored"])  # every point: tests/unit/tasks/test_crash_matrix.py
def test_an_interrupted_rollback_run_again_ends_the_same(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str], failpoint: str
) -> None:
    user = user_factory("rb-killed")
    old = active_keys(iam, user)[0]
    rotated = keyrotor_cli(stack_environ, "rotate", user, "--local", "--grace-period", "10m")
    assert rotated.returncode == 0, rotated.stderr
    killed = keyrotor_process({**stack_environ, "KEYROTOR_FAILPOINT": failpoint}, "rollback", user, "--local")
    assert killed.returncode == -signal.SIGKILL
    blocked = keyrotor_cli(stack_environ, "rotate", user, "--local")
    assert blocked.returncode == 4 and "rollback" in blocked.stderr  # an unfinished rollback is finished, not undone
    rollback_and_check(iam, connections, stack_environ, user, old)
    records = connections.records(user)
    restores = [s for s in state_history(records) if s.rollback and s.rollback.restored_at]
    assert len({s.rollback.restored_at for s in restores if s.rollback}) == 1, "restored once"
    versions = records.kv.current_version(records.paths.secret)
    assert versions == 3, "one publish and exactly one restore, even with the rollback run twice"


def test_rollback_while_waiting_for_a_key_still_in_use(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("rb-waiting")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=10_000)  # keeps the old key busy
    app.start()
    try:
        stuck = keyrotor_cli(stack_environ, "rotate", user, "--local", "--max-wait", "3s")
        assert stuck.returncode == 6
        report = rollback_and_check(iam, connections, stack_environ, user, old)
    finally:
        stats = app.stop()
    assert report["rollback"]["from_phase"] == "published"
    assert stats.errors == []


def test_rollback_after_deactivation_cancels_the_scheduled_deletion(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("rb-deact")
    old = active_keys(iam, user)[0]
    rotated = keyrotor_cli(stack_environ, "rotate", user, "--local", "--grace-period", "10m", "--json")
    assert rotated.returncode == 0, rotated.stderr
    deletion = json.loads(rotated.stdout)["deletion_run_id"]
    assert deletion and all_keys(iam, user)[old] == "Inactive"
    report = rollback_and_check(iam, connections, stack_environ, user, old)
    assert deletion in report["rollback"]["cancelled_runs"]
    assert run_state(deletion).is_cancelled()


def test_rollback_of_a_paused_rotation(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("rb-paused")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    run_id = schedule_rotation(user, quiet_period="8s")
    wait_for(lambda: (s := records.load_state()) is not None and s.phase is Phase.PUBLISHED, "the wait")
    assert keyrotor_cli(stack_environ, "pause", user).returncode == 0
    wait_for(lambda: paused_run(records) == run_id, "the durable pause")
    report = rollback_and_check(iam, connections, stack_environ, user, old)
    assert run_id in report["rollback"]["cancelled_runs"]
    assert run_state(run_id).is_cancelled()


def test_rollback_after_the_old_key_was_deleted_is_refused(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("rb-late")
    old = active_keys(iam, user)[0]
    assert keyrotor_cli(stack_environ, "rotate", user, "--local").returncode == 0
    keys, versions = (
        all_keys(iam, user),
        connections.records(user).kv.current_version(connections.records(user).paths.secret),
    )
    result = keyrotor_cli(stack_environ, "rollback", user)
    assert result.returncode == 3
    assert "impossible" in result.stderr and old in result.stderr and "deleted at" in result.stderr
    assert all_keys(iam, user) == keys
    assert connections.records(user).kv.current_version(connections.records(user).paths.secret) == versions


def test_rollback_while_a_run_works_on_the_rotation_says_at_once_to_pause_it_first(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    from tests.helpers import keyrotor_popen, stop_process

    user = user_factory("rb-live")
    records = connections.records(user)
    running = keyrotor_popen(stack_environ, "rotate", user, "--local", "--quiet-period", "60s", "--max-wait", "120s")
    try:
        wait_for(lambda: (s := records.load_state()) is not None and s.phase is Phase.PUBLISHED, "the wait")
        started = time.monotonic()
        refused = keyrotor_cli(stack_environ, "rollback", user)
        took = time.monotonic() - started
        assert refused.returncode == 4, refused.stderr
        text = " ".join(refused.stderr.split())
        assert "pause it first" in text and f"keyrotor pause {user}" in text and "Ctrl-C" in text, text
        assert took < 20, f"answered after {took:.0f}s; the live lease says so at once"
        assert (
            required(records.load_state()).phase is Phase.PUBLISHED and required(records.load_state()).rollback is None
        )
    finally:
        stop_process(running)


def test_status_says_what_a_paused_and_a_rolled_back_rotation_do_and_the_command_that_moves_them(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("status")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    run_id = schedule_rotation(user, quiet_period="60s", max_wait="120s")
    wait_for(lambda: (s := records.load_state()) is not None and s.phase is Phase.PUBLISHED, "the wait")
    assert keyrotor_cli(stack_environ, "pause", user).returncode == 0
    wait_for(lambda: paused_run(records) == run_id, "the durable pause")
    paused = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)["outlook"]
    assert (
        paused["doing"].startswith("paused by an operator since")
        and paused["waiting_for"] == "an operator to resume it"
    )
    assert paused["command"] == f"keyrotor resume {user}" and paused["needs_person"]
    text = keyrotor_cli({**stack_environ, "COLUMNS": "250"}, "status", user).stdout
    assert "paused by an operator since" in text and f"next: keyrotor resume {user}" in text

    rollback_and_check(iam, connections, stack_environ, user, old, "--now")  # the rollback's wait is not the subject
    rolled = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)["outlook"]
    assert rolled["doing"].startswith("rolled back at") and f"old key {old} is active" in rolled["doing"]
    assert "continue from phase" not in json.dumps(rolled) and rolled["command"].startswith(f"keyrotor rotate {user}")


def test_pause_with_the_prefect_server_down_names_it_and_exits_9(
    connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    from keyrotor.core.model import RotationState
    from keyrotor.core.timings import Timings

    user = user_factory("nopref")
    waiting = RotationState(
        "nopref01",
        user,
        connections.account_id,
        Phase.PUBLISHED,
        Timings(quiet_period=timedelta(seconds=60), poll_interval=timedelta(seconds=1)),
        datetime.now(UTC),
        "test",
        last_flow_run_id="0e6e2a3c-5b7e-4d7a-9a51-8e5f0e8f2c11",
    )
    connections.records(user).save_state(waiting, "test")
    down = {**stack_environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    for command in ("pause", "resume"):
        result = keyrotor_cli(down, command, user)
        assert result.returncode == 9, (command, result.stderr)
        text = " ".join(result.stderr.split())
        assert "Prefect server at http://127.0.0.1:9/api" in text and "PREFECT_API_URL" in text, text
        assert "Traceback" not in result.stderr


def test_rollback_of_a_first_rotation_keeps_every_reader_of_vault_working(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    """Vault held no secret before the user's first rotation: rolling back cannot restore one, so the new key that
    Vault names stays active (and the old key is active again); no application reading Vault breaks."""
    user = user_factory("rb-first", publish=False)
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    app = SimulatedApp(user, records, refresh=0.3, interval=0.2)
    app.start()
    try:
        rotated = keyrotor_cli(stack_environ, "rotate", user, "--local", "--grace-period", "10m", "--json")
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)["new_key_id"]
        rolled = keyrotor_cli(stack_environ, "rollback", user, "--json")
        assert rolled.returncode == 0, rolled.stderr[-3000:]
        time.sleep(2)  # the application goes on reading Vault and calling AWS
    finally:
        stats = app.stop()
    report = json.loads(rolled.stdout)
    assert report["phase"] == "rolled_back" and report["rollback"]["new_key_kept"] is True
    assert all_keys(iam, user) == {old: "Active", new: "Active"}
    assert required(records.published()).key_id == new
    assert stats.calls > 5 and stats.errors == [], stats.errors[:3]
    outlook = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)["outlook"]
    assert "still names the new key" in outlook["doing"] and outlook["needs_person"]
