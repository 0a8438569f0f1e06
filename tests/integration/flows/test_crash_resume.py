"""Kill the process running the rotation with SIGKILL at a step, start it again, and check the end state.

Every run ends the same way: exactly one key, active, the one in Vault, working; the old key deleted; no
orphan key; and the application that kept calling AWS throughout never had a call refused. Here a real process is
killed at the three points where IAM and Vault disagree with the record (a key created whose secret nobody holds,
a secret published but not recorded, an old key deactivated but not recorded) and in the middle of the wait; the
steps are crashed at every one of the eleven points in ``tests/unit/tasks/test_crash_matrix.py``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import Phase
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_cli, keyrotor_popen, keyrotor_process
from tests.integration.support import active_keys, assert_rotated, required

pytestmark = pytest.mark.integration

FAILPOINTS = [
    "after-create-key",  # key created in IAM, its secret not yet saved anywhere: an orphan to clean up
    "after-publish",  # secret published, state not yet updated
    "after-deactivate",  # old key inactive, state not yet updated
]


def run_until_killed(env: dict[str, str], user: str, failpoint: str) -> None:
    killed = keyrotor_process({**env, "KEYROTOR_FAILPOINT": failpoint}, "rotate", user, "--local")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_killed_after_each_step_then_run_again(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str], failpoint: str
) -> None:
    user = user_factory("crash")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=0.5)
    app.start()
    try:
        run_until_killed(stack_environ, user, failpoint)
        resumed = keyrotor_cli(stack_environ, "rotate", user, "--local")
    finally:
        stats = app.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_rotated(iam, connections, user, old)
    assert stats.errors == []
    assert connections.records(user).stashed() is None, "the unpublished copy of the secret must not linger"


def test_killed_in_the_middle_of_the_wait_then_run_again(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("midwait")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    app = SimulatedApp(user, records, refresh=0.5)
    app.start()
    try:
        running = keyrotor_popen(stack_environ, "rotate", user, "--local", "--quiet-period", "5s")
        deadline = time.time() + 90
        while (state := records.load_state()) is None or state.phase is not Phase.PUBLISHED:
            assert time.time() < deadline and running.poll() is None, "rotation never reached the wait"
            time.sleep(0.1)
        time.sleep(1.5)
        running.send_signal(signal.SIGKILL)
        running.communicate(timeout=30)
        assert required(records.load_state()).phase is Phase.PUBLISHED, "the kill should land during the wait"
        resumed = keyrotor_process(stack_environ, "rotate", user, "--local")
    finally:
        stats = app.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Continuing rotation" in resumed.stderr
    assert_rotated(iam, connections, user, old)
    assert stats.errors == []
