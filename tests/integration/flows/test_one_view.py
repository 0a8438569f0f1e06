"""One view of a rotation: after every change (the run parking, the waker's look, a pause, a resume, a rollback
waiting for the new key, its end), the rotation's artifact in the Prefect UI, ``keyrotor status`` and
``keyrotor fleet-status`` say the same thing: what it does, what it waits for, and the command that moves it on."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

from keyrotor.adapters.connections import Connections
from keyrotor.control.view import artifact_key
from keyrotor.core.model import Phase
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_cli
from tests.integration.support import active_keys, required, schedule_rotation, wait_for

pytestmark = pytest.mark.integration

View = tuple[str, str, str, str]  # status, doing, waiting for, next command


def artifact_view(connections: Connections, user: str) -> View | None:
    """What the rotation's artifact says now."""
    key = artifact_key(user, connections.account_id)
    with get_client(sync_client=True) as client:
        latest = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
        )
    if not latest:
        return None
    text = str(latest[0].data)

    def line(name: str) -> str:
        found = re.search(rf"^- \*\*{name}\*\*: (.*)$", text, re.MULTILINE)
        return found.group(1) if found else ""

    command = line("next")
    status = re.sub(r" \(phase `[a-z_]+`\)$", "", line("status"))
    return status, line("doing"), line("waiting for"), "" if command == "nothing to do" else command.strip("`")


def status_view(env: dict[str, str], user: str) -> View:
    outlook = json.loads(keyrotor_cli(env, "status", user, "--json").stdout)["outlook"]
    return outlook["status"], outlook["doing"], outlook["waiting_for"], outlook["command"]


def fleet_view(env: dict[str, str], user: str) -> View:
    fleet = json.loads(keyrotor_cli(env, "fleet-status", "--json", "--all", "--user", user).stdout)
    if not fleet["rotations"]:
        return "", "", "", ""  # not recorded yet
    (entry,) = fleet["rotations"]
    return entry["status"], entry["doing"], entry["waiting_for"], entry["command"]


def agree(connections: Connections, env: dict[str, str], user: str, expect: str) -> View:
    """Wait until the three say the same (the change and its artifact land a moment apart), and that it is
    ``expect``; return what they say."""
    seen: list[Any] = []

    def same() -> View | None:
        views = (artifact_view(connections, user), status_view(env, user), fleet_view(env, user))
        seen[:] = [views]
        return views[1] if views[0] == views[1] == views[2] and expect in views[1][1] else None

    try:
        return wait_for(same, f"the artifact, status and fleet-status to say {expect!r}", timeout=20)
    except AssertionError:
        artifact, status, fleet = seen[0]
        raise AssertionError(f"they disagree:\n artifact {artifact}\n status   {status}\n fleet    {fleet}") from None


def test_the_artifact_status_and_fleet_status_say_the_same_after_every_change(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
) -> None:
    user = user_factory("oneview")
    old = active_keys(iam, user)[0]
    records = connections.records(user)
    app = SimulatedApp(user, records, refresh=10_000, interval=0.5)  # keeps the old key busy: the rotation waits
    app.start()
    try:
        # Looks every 3 s: each look changes the record (and the artifact), and the three are read one after another.
        schedule_rotation(user, quiet_period="5s", poll_interval="3s", max_wait="120s")
        parked = agree(connections, stack_environ, user, "holds no process")  # parked by its run
        assert parked[0] == "waiting" and "next check at" in parked[2]
        first_look = required(connections.waiting.read(connections.account_id, user)).next_check_at
        wait_for(
            lambda: required(connections.waiting.read(connections.account_id, user)).next_check_at > first_look,
            "the waker's next look",
        )
        looked = agree(connections, stack_environ, user, "holds no process")  # the waker recorded a look
        assert looked[2] != parked[2], "the next check moved on, in all three"

        assert keyrotor_cli(stack_environ, "pause", user).returncode == 0
        paused = agree(connections, stack_environ, user, "paused by an operator")
        assert paused[0] == "paused" and paused[3] == f"keyrotor resume {user}"

        assert keyrotor_cli(stack_environ, "resume", user).returncode == 0
        agree(connections, stack_environ, user, "holds no process")  # it ran from the top, and parked again

        rolled = keyrotor_cli(stack_environ, "rollback", user, "--json")  # returns once the old key is back
        assert rolled.returncode == 0, rolled.stderr[-2000:]
        back = agree(connections, stack_environ, user, "waiting for applications to stop using the new key")
        assert back[0] == "rolling back" and f"rolled back to the old key {old}" in back[1]
    finally:
        app.stop()
    ended = agree(connections, stack_environ, user, "rolled back at")
    assert ended[0] == "rolled back" and f"old key {old} is active and in Vault again" in ended[1]
    assert required(records.load_state()).phase is Phase.ROLLED_BACK
