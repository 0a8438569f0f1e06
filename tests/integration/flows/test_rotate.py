"""The rotate-access-key flow against the real local servers, driven through the ``keyrotor`` command."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import Phase
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_cli, keyrotor_popen, stop_process
from tests.integration.support import active_keys, all_keys, assert_rotated, required, state_history, wait_for

pytestmark = pytest.mark.integration


def test_happy_path_rotates_without_a_single_refused_call(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("happy")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=0.5)
    app.start()
    result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--json")
    stats = app.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "completed" and report["old_key_id"] == old
    new = assert_rotated(iam, connections, user, old)
    assert report["new_key_id"] == new
    assert stats.errors == [] and stats.calls > 5
    assert stats.keys_used == [old, new]
    history = state_history(connections.records(user))
    # (a notice sent would be recorded by one more write in the same phase; none is asked for here)
    assert [phase for phase, _ in itertools.groupby(s.phase for s in reversed(history))] == [
        Phase.STARTED,
        Phase.CREATED,
        Phase.VERIFIED,
        Phase.PUBLISHED,
        Phase.DEACTIVATED,
        Phase.COMPLETED,
    ]
    assert history[0].notified == (), "no notice is sent when `keyrotor notifications apply` asked for none"

    status = keyrotor_cli(stack_environ, "status", user, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["published_key_id"] == new and shown["rotation"]["phase"] == "completed"
    assert [k["key_id"] for k in shown["keys"]] == [new]


def test_slow_application_keeps_the_old_key_active_until_it_switched(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("slow")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=6, interval=0.2)
    app.start()
    started = time.time()
    result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--json", "--quiet-period", "2s")
    stats = app.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    new = assert_rotated(iam, connections, user, old)
    switched = stats.switched_at[new]
    deactivated = datetime.fromisoformat(report["deactivated_at"]).timestamp()
    assert switched - started > 3, "the slow app should switch late"
    assert deactivated >= switched + 1, (deactivated, switched)  # quiet period counted from its last old-key call
    assert stats.errors == []


def test_status_shows_each_application_moving_to_the_new_key(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    """Two applications read Vault; the second re-reads it only when the test says (a nightly job): while the
    rotation waits, status names both (from CloudTrail) and says which has moved to the new key and which has not;
    once the second moves, the rotation finishes and both are seen on the new key."""
    user = user_factory("moving")
    old = active_keys(iam, user)[0]
    orders = SimulatedApp(user, connections.records(user), refresh=2, interval=0.3, user_agent="orders-api/1.0")
    nightly = SimulatedApp(
        user, connections.records(user), refresh=10_000, interval=0.3, user_agent="nightly-report/7.1"
    )
    for app in (orders, nightly):
        app.start()
    rotation = keyrotor_popen(stack_environ, "rotate", user, "--local", "--quiet-period", "3s", "--max-wait", "5m")
    try:

        def consumers() -> dict[str, Any] | None:
            said = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)["consumers"]
            return said if said and said["moved"] and len(said["moved"]) + len(said["still_on_old"]) == 2 else None

        first = wait_for(consumers, "the first application to move", timeout=60)
        assert [c["user_agent"].split()[0] for c in first["moved"]] == ["orders-api/1.0"], first
        assert [c["user_agent"].split()[0] for c in first["still_on_old"]] == ["nightly-report/7.1"], first
        assert first["said"].startswith("1 of 2 moved to the new key; still on the old key only: 127.0.0.1 nightly")
        assert rotation.poll() is None, "the rotation waits for the nightly job"
        nightly.refresh = 0.5  # its next run reads Vault
        assert rotation.wait(timeout=120) == 0, "the old key went quiet once the nightly job moved"
    finally:
        stop_process(rotation)
        stats = [app.stop() for app in (orders, nightly)]
    new = assert_rotated(iam, connections, user, old)
    assert all(s.errors == [] for s in stats)
    # Both now on the new key (read with `consumers`: status shows who moved only while both keys are active).
    listed = json.loads(keyrotor_cli(stack_environ, "consumers", user, "--key", new, "--json").stdout)
    (use,) = listed["keys"]
    programs = {c["user_agent"].split()[0] for c in use["consumers"]}  # (and keyrotor's own verification call)
    assert {"nightly-report/7.1", "orders-api/1.0"} <= programs, programs


def test_at_max_wait_both_keys_stay_active_and_the_evidence_is_shown(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    """An application that never follows Vault (it read its key once, as one with the key in its own configuration
    does): the rotation stops at the deadline, and what it says names that application, from CloudTrail, in the
    exit message, in status and in fleet-status's needs-a-person entry."""
    user = user_factory("stuck")
    old = active_keys(iam, user)[0]
    legacy = "legacy-billing/4.2"
    app = SimulatedApp(user, connections.records(user), refresh=10_000, interval=0.3, user_agent=legacy)
    app.start()
    try:
        result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--quiet-period", "2s", "--max-wait", "5s")
        assert result.returncode == 6, result.stderr
        said = " ".join(result.stderr.split())
        assert "still in use" in said and "sts" in said and old in said
        assert f"0 of 1 moved to the new key; still on the old key only: 127.0.0.1 {legacy}" in said, said
        status = json.loads(keyrotor_cli(stack_environ, "status", user, "--json").stdout)
        (still,) = status["consumers"]["still_on_old"]
        assert (still["source_ip"], still["user_agent"].split()[0]) == ("127.0.0.1", legacy)  # botocore adds its own
        assert still["calls"] == ["sts:GetCallerIdentity"]
        assert status["consumers"]["moved"] == [] and status["consumers"]["new"]["consumers"] == []
        listed = json.loads(keyrotor_cli(stack_environ, "consumers", user, "--key", old, "--json").stdout)
        (use,) = listed["keys"]
        assert use["key_id"] == old and [c["user_agent"].split()[0] for c in use["consumers"]] == [legacy], use
        fleet = json.loads(keyrotor_cli(stack_environ, "fleet-status", "--json", "--user", user).stdout)
        (entry,) = fleet["rotations"]
        assert fleet["summary"]["needs_person"] == [user] and legacy in json.dumps(entry), entry
    finally:
        stats = app.stop()
    keys = all_keys(iam, user)
    assert len(keys) == 2 and set(keys.values()) == {"Active"}
    state = required(connections.records(user).load_state())
    assert state.phase is Phase.PUBLISHED and state.halted
    assert state.last_used is not None and state.last_used.service == "sts"
    assert required(connections.records(user).published()).key_id == state.new_key_id
    assert stats.errors == []


def test_two_active_keys_are_refused_and_nothing_changes(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("twokeys", keys=2)
    before = all_keys(iam, user)
    published = connections.records(user).published()
    result = keyrotor_cli(stack_environ, "rotate", user, "--local")
    assert result.returncode == 3, result.stderr
    assert "two active access keys" in result.stderr
    assert all_keys(iam, user) == before
    assert connections.records(user).published() == published
    assert connections.records(user).load_state() is None


def test_one_inactive_key_frees_its_slot_for_the_new_key(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("inactive", keys=2, inactive=1)
    old = active_keys(iam, user)[0]
    result = keyrotor_cli(stack_environ, "rotate", user, "--local")
    assert result.returncode == 0, result.stderr
    assert_rotated(iam, connections, user, old)


def test_user_without_a_key_gets_one_published(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("nokey", keys=0)
    result = keyrotor_cli(stack_environ, "rotate", user, "--local", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["old_key_id"] is None and report["phase"] == "completed"
    credentials = required(connections.records(user).published_credentials())
    assert all_keys(iam, user) == {credentials.key_id: "Active"}


def test_nonexistent_user_is_refused(stack_environ: dict[str, str]) -> None:
    result = keyrotor_cli(stack_environ, "rotate", "nobody-here", "--local", "--json")
    assert result.returncode == 3
    assert "does not exist" in json.loads(result.stdout)["message"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"VAULT_ADDR": "http://127.0.0.1:9"},
            "Vault at http://127.0.0.1:9 is unreachable (connection refused); check VAULT_ADDR",
        ),
        ({"VAULT_TOKEN": "not-the-token"}, "denied"),
        ({"KEYROTOR_VAULT_MOUNT": "no-such-mount"}, "no KV mount"),
    ],
    ids=["vault-down", "wrong-token", "missing-mount"],
)
def test_vault_problems_fail_clearly_and_change_nothing(
    iam: Any, user_factory: Callable[..., str], stack_environ: dict[str, str], override: dict[str, str], expected: str
) -> None:
    user = user_factory("vault")
    before = all_keys(iam, user)
    result = keyrotor_cli({**stack_environ, **override}, "rotate", user, "--local")
    assert result.returncode == 7, result.stderr
    assert expected in " ".join(result.stderr.split())  # rich wraps long lines
    assert "Traceback" not in result.stderr
    assert all_keys(iam, user) == before


@pytest.mark.parametrize("value", ["soon", "-5s", "10x"])
def test_bad_durations_are_refused_before_anything_runs(stack_environ: dict[str, str], value: str) -> None:
    result = keyrotor_cli(stack_environ, "rotate", "whoever", "--local", "--quiet-period", value)
    assert result.returncode == 2
    assert "duration" in result.stderr


def test_two_rotations_of_one_user_at_once_one_refuses(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("twice")
    old = active_keys(iam, user)[0]
    first = keyrotor_popen(stack_environ, "rotate", user, "--local", "--quiet-period", "6s", "--max-wait", "60s")
    records = connections.records(user)
    deadline = time.time() + 60
    while (state := records.load_state()) is None or state.phase is not Phase.PUBLISHED:
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.2)
    second = keyrotor_cli(stack_environ, "rotate", user, "--local")
    _, first_err = first.communicate(timeout=120)
    assert second.returncode == 4, second.stderr
    assert "already running" in second.stderr
    assert first.returncode == 0, first_err
    assert_rotated(iam, connections, user, old)


def test_rotation_works_with_the_least_privilege_vault_policy_from_the_readme(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    import hvac

    from tests.conftest import ROOT

    root = hvac.Client(url=stack_environ["VAULT_ADDR"], token=stack_environ["VAULT_TOKEN"])
    root.sys.create_or_update_policy("keyrotor", (ROOT / "policies" / "vault-policy.hcl").read_text())
    token = root.auth.token.create(policies=["keyrotor"], ttl="10m")["auth"]["client_token"]
    user = user_factory("leastpriv")
    old = active_keys(iam, user)[0]
    result = keyrotor_cli({**stack_environ, "VAULT_TOKEN": token}, "rotate", user, "--local")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_rotated(iam, connections, user, old)


@pytest.mark.parametrize("command", ["rotate", "status", "rollback", "finish", "pause", "resume"])
@pytest.mark.parametrize("name", ["", "no/slash"])
def test_impossible_user_names_are_bad_input_found_before_anything_is_called(
    stack_environ: dict[str, str], command: str, name: str
) -> None:
    env = {**stack_environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "VAULT_ADDR": "http://127.0.0.1:9"}
    result = keyrotor_cli(env, command, name)  # nothing reachable: any call would fail with another code
    assert result.returncode == 2, result.stderr
    assert "not a valid IAM user name" in result.stderr and "Traceback" not in result.stderr


def test_a_quiet_period_that_cannot_be_safe_is_refused_unless_accepted(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("quiet0")
    before = all_keys(iam, user)
    for value in ("0", "0s"):
        refused = keyrotor_cli(stack_environ, "rotate", user, "--local", "--quiet-period", value)
        assert refused.returncode == 2, refused.stderr
        assert "--accept-unsafe-quiet-period" in refused.stderr and "Traceback" not in refused.stderr
    assert all_keys(iam, user) == before and connections.records(user).load_state() is None

    real_aws = {k: v for k, v in stack_environ.items() if k != "AWS_ENDPOINT_URL"}  # never reached: refused first
    short = keyrotor_cli(real_aws, "rotate", user, "--local", "--quiet-period", "1h", "--max-wait", "2h")
    assert short.returncode == 2 and "shorter than the 4h" in short.stderr, short.stderr

    accepted = keyrotor_cli(
        stack_environ, "rotate", user, "--local", "--quiet-period", "0s", "--accept-unsafe-quiet-period"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert_rotated(iam, connections, user, list(before)[0])


def test_without_a_prefect_server_two_rotations_at_once_start_temporary_servers_one_rotates_the_other_refuses(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str], tmp_path: Path
) -> None:
    """No PREFECT_API_URL: each command starts Prefect's temporary server, on one PREFECT_HOME, at the same time.
    Neither crashes, one rotates (in its process, saying so), the other refuses with exit 4, and applications see
    one new key, not two."""
    user = user_factory("together")
    old = active_keys(iam, user)[0]
    env = {k: v for k, v in stack_environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    both = [keyrotor_popen(env, "rotate", user, "--local", "--json") for _ in range(2)]
    ended = [(process.wait(timeout=300), *process.communicate()) for process in both]
    codes = sorted(code for code, _, _ in ended)
    errors = "\n---\n".join(err[-3000:] for _, _, err in ended)
    assert codes == [0, 4], errors
    assert "Traceback" not in errors
    refusal = next(err for code, _, err in ended if code == 4)
    assert "already running" in refusal or "was just rotated" in refusal, refusal
    rotated = " ".join(next(err for code, _, err in ended if code == 0).split())  # the console wraps long lines
    assert (
        "temporary server" in rotated and "Rotating in this process" in rotated and "stays until the old key" in rotated
    )
    assert (tmp_path / "prefect.db").is_file(), "Prefect's ephemeral database belongs in PREFECT_HOME"
    assert_rotated(iam, connections, user, old)
    history = state_history(connections.records(user))
    assert len({state.rotation_id for state in history}) == 1, "one rotation, not two"


def test_a_rotation_right_after_a_rotation_is_refused_unless_forced(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> None:
    user = user_factory("again")
    old = active_keys(iam, user)[0]
    assert keyrotor_cli(stack_environ, "rotate", user, "--local").returncode == 0
    current = assert_rotated(iam, connections, user, old)
    again = keyrotor_cli(stack_environ, "rotate", user, "--local")
    assert again.returncode == 4, again.stderr
    assert "was just rotated" in again.stderr and current in again.stderr and "--force" in again.stderr
    assert active_keys(iam, user) == [current]
    forced = keyrotor_cli(stack_environ, "rotate", user, "--local", "--force")
    assert forced.returncode == 0, forced.stderr
    assert_rotated(iam, connections, user, current)


def test_a_rotation_is_named_after_its_user_tagged_and_has_an_artifact(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    prefect_api: str,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    from keyrotor.control.view import artifact_key

    user = user_factory("named")
    assert keyrotor_cli(stack_environ, "rotate", user, "--local").returncode == 0
    key = artifact_key(user, connections.account_id)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"user:{user}"])))
        latest = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
        )
    assert [run.name for run in runs] == [f"rotate {user}"]
    assert "keyrotor" in runs[0].tags
    assert latest, f"no artifact {key}"
    markdown = str(latest[0].data)
    assert "completed" in markdown and user in markdown and "deactivated" in markdown
