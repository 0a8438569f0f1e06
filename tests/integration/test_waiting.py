"""Waiting holds nothing: a rotation that waits for its old key to go quiet is a suspended flow run and a record in
Vault's waiting index; the waker (in ``keyrotor serve``) looks at the old key when due and resumes the run."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from keyrotor.apps import SimulatedApp
from keyrotor.model import Phase
from keyrotor.prefect_api import WAITING
from tests.helpers import keyrotor_cli
from tests.integration.test_operate import processes_of, run_state, schedule_rotation, wait_for
from tests.integration.test_rotate import active_keys, assert_rotated

pytestmark = pytest.mark.integration


def parked(connections, user: str):  # type: ignore[no-untyped-def]
    return connections.waiting.read(connections.account_id, user)


def test_a_waiting_rotation_holds_no_process_and_is_woken_once_the_old_key_is_quiet(
    iam, connections, user_factory, stack_environ, served
) -> None:
    user = user_factory("park")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    app = SimulatedApp(user, records, refresh=3, interval=0.25)  # keeps using the old key for about 3 s
    app.start()
    try:
        run_id = schedule_rotation(user, quiet_period="6s", poll_interval="1s")
        wait = wait_for(lambda: parked(connections, user), "the rotation to park")
        assert wait.flow_run_id == run_id and wait.old_key_id == old and not wait.held
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
    final = records.load_state()
    assert final.phase is Phase.COMPLETED
    # Woken promptly: deactivated within poll interval + waker interval + a few seconds of the key going quiet.
    last_old_call = max(t for key, t in stats.switched_at.items() if key != old) - 0  # the app switched then
    quiet_since = max(final.published_at.timestamp(), last_old_call)
    assert final.deactivated_at is not None
    late = final.deactivated_at.timestamp() - (quiet_since + 6)
    assert late < 12, f"woken {late:.1f}s after the quiet period ended"
    history = list(reversed(records.state_history()))
    assert {s.new_key_id for s in history if s.new_key_id} == {final.new_key_id}
    assert datetime.now().year  # keep the import honest
