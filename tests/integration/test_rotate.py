"""The rotate-access-key flow against the real local servers, driven through the ``keyrotor`` command."""

from __future__ import annotations

import json
import time
from datetime import datetime

import boto3
import pytest

from keyrotor.apps import SimulatedApp
from keyrotor.model import Phase
from tests.helpers import keyrotor_cli, keyrotor_popen

pytestmark = pytest.mark.integration


def active_keys(iam, user: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"] if k["Status"] == "Active"
    ]


def all_keys(iam, user: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def assert_rotated(iam, connections, user: str, old_key_id: str) -> str:  # type: ignore[no-untyped-def]
    """Exactly one key, active, the one in Vault, and it works; the old key is gone."""
    keys = all_keys(iam, user)
    credentials = connections.records(user).published_credentials()
    assert credentials is not None
    assert keys == {credentials.key_id: "Active"}, keys
    assert credentials.key_id != old_key_id
    sts = boto3.client(
        "sts", aws_access_key_id=credentials.key_id, aws_secret_access_key=credentials.secret.get_secret_value()
    )
    assert sts.get_caller_identity()["Arn"].endswith(f":user/{user}")
    return credentials.key_id


def test_happy_path_rotates_without_a_single_refused_call(iam, connections, user_factory, stack_environ) -> None:
    user = user_factory("happy")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=0.5)
    app.start()
    result = keyrotor_cli(stack_environ, "rotate", user, "--json")
    stats = app.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "completed" and report["old_key_id"] == old
    new = assert_rotated(iam, connections, user, old)
    assert report["new_key_id"] == new
    assert stats.errors == [] and stats.calls > 5
    assert stats.keys_used == [old, new]
    history = connections.records(user).state_history()
    assert [s.phase for s in reversed(history)] == [
        Phase.STARTED,
        Phase.CREATED,
        Phase.VERIFIED,
        Phase.PUBLISHED,
        Phase.DEACTIVATED,
        Phase.COMPLETED,
    ]

    status = keyrotor_cli(stack_environ, "status", user, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["published_key_id"] == new and shown["rotation"]["phase"] == "completed"
    assert [k["key_id"] for k in shown["keys"]] == [new]


def test_slow_application_keeps_the_old_key_active_until_it_switched(
    iam, connections, user_factory, stack_environ
) -> None:
    user = user_factory("slow")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=6, interval=0.2)
    app.start()
    started = time.time()
    result = keyrotor_cli(stack_environ, "rotate", user, "--json", "--quiet-period", "2s")
    stats = app.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    new = assert_rotated(iam, connections, user, old)
    switched = stats.switched_at[new]
    deactivated = datetime.fromisoformat(report["deactivated_at"]).timestamp()
    assert switched - started > 3, "the slow app should switch late"
    assert deactivated >= switched + 1, (deactivated, switched)  # quiet period counted from its last old-key call
    assert stats.errors == []


def test_at_max_wait_both_keys_stay_active_and_the_evidence_is_shown(
    iam, connections, user_factory, stack_environ
) -> None:
    user = user_factory("stuck")
    old = active_keys(iam, user)[0]
    app = SimulatedApp(user, connections.records(user), refresh=10_000, interval=0.3)  # never re-reads Vault
    app.start()
    result = keyrotor_cli(stack_environ, "rotate", user, "--quiet-period", "2s", "--max-wait", "5s")
    stats = app.stop()
    assert result.returncode == 6, result.stderr
    assert "still in use" in result.stderr and "sts" in result.stderr and old in result.stderr
    keys = all_keys(iam, user)
    assert len(keys) == 2 and set(keys.values()) == {"Active"}
    state = connections.records(user).load_state()
    assert state.phase is Phase.PUBLISHED and state.halted and state.last_used["service"] == "sts"
    assert connections.records(user).published().key_id == state.new_key_id
    assert stats.errors == []


def test_two_active_keys_are_refused_and_nothing_changes(iam, connections, user_factory, stack_environ) -> None:
    user = user_factory("twokeys", keys=2)
    before = all_keys(iam, user)
    published = connections.records(user).published()
    result = keyrotor_cli(stack_environ, "rotate", user)
    assert result.returncode == 3, result.stderr
    assert "two active access keys" in result.stderr
    assert all_keys(iam, user) == before
    assert connections.records(user).published() == published
    assert connections.records(user).load_state() is None


def test_one_inactive_key_frees_its_slot_for_the_new_key(iam, connections, user_factory, stack_environ) -> None:
    user = user_factory("inactive", keys=2, inactive=1)
    old = active_keys(iam, user)[0]
    result = keyrotor_cli(stack_environ, "rotate", user)
    assert result.returncode == 0, result.stderr
    assert_rotated(iam, connections, user, old)


def test_user_without_a_key_gets_one_published(iam, connections, user_factory, stack_environ) -> None:
    user = user_factory("nokey", keys=0)
    result = keyrotor_cli(stack_environ, "rotate", user, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["old_key_id"] is None and report["phase"] == "completed"
    credentials = connections.records(user).published_credentials()
    assert all_keys(iam, user) == {credentials.key_id: "Active"}


def test_nonexistent_user_is_refused(stack_environ) -> None:
    result = keyrotor_cli(stack_environ, "rotate", "nobody-here", "--json")
    assert result.returncode == 3
    assert "does not exist" in json.loads(result.stdout)["message"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"VAULT_ADDR": "http://127.0.0.1:9"}, "unreachable"),
        ({"VAULT_TOKEN": "not-the-token"}, "denied"),
        ({"KEYROTOR_VAULT_MOUNT": "no-such-mount"}, "no KV mount"),
    ],
    ids=["vault-down", "wrong-token", "missing-mount"],
)
def test_vault_problems_fail_clearly_and_change_nothing(iam, user_factory, stack_environ, override, expected) -> None:
    user = user_factory("vault")
    before = all_keys(iam, user)
    result = keyrotor_cli({**stack_environ, **override}, "rotate", user)
    assert result.returncode == 7, result.stderr
    assert expected in result.stderr
    assert all_keys(iam, user) == before


@pytest.mark.parametrize("value", ["soon", "-5s", "10x"])
def test_bad_durations_are_refused_before_anything_runs(stack_environ, value: str) -> None:
    result = keyrotor_cli(stack_environ, "rotate", "whoever", "--quiet-period", value)
    assert result.returncode == 2
    assert "duration" in result.stderr


def test_two_rotations_of_one_user_at_once_one_refuses(iam, connections, user_factory, stack_environ) -> None:
    user = user_factory("twice")
    old = active_keys(iam, user)[0]
    first = keyrotor_popen(stack_environ, "rotate", user, "--quiet-period", "6s", "--max-wait", "60s")
    records = connections.records(user)
    deadline = time.time() + 60
    while (state := records.load_state()) is None or state.phase is not Phase.PUBLISHED:
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.2)
    second = keyrotor_cli(stack_environ, "rotate", user)
    _, first_err = first.communicate(timeout=120)
    assert second.returncode == 4, second.stderr
    assert "already running" in second.stderr
    assert first.returncode == 0, first_err
    assert_rotated(iam, connections, user, old)


def test_rotation_works_with_the_least_privilege_vault_policy_from_the_readme(
    iam, connections, user_factory, stack_environ
) -> None:
    import hvac

    from tests.conftest import ROOT

    root = hvac.Client(url=stack_environ["VAULT_ADDR"], token=stack_environ["VAULT_TOKEN"])
    root.sys.create_or_update_policy("keyrotor", (ROOT / "policies" / "vault-policy.hcl").read_text())
    token = root.auth.token.create(policies=["keyrotor"], ttl="10m")["auth"]["client_token"]
    user = user_factory("leastpriv")
    old = active_keys(iam, user)[0]
    result = keyrotor_cli({**stack_environ, "VAULT_TOKEN": token}, "rotate", user)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_rotated(iam, connections, user, old)


def test_rotate_works_without_a_prefect_server_in_ephemeral_mode(
    iam, connections, user_factory, stack_environ, tmp_path
) -> None:
    user = user_factory("ephemeral")
    old = active_keys(iam, user)[0]
    env = {k: v for k, v in stack_environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    result = keyrotor_cli(env, "rotate", user, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "temporary server" in result.stderr
    assert (tmp_path / "prefect.db").is_file(), "Prefect's ephemeral database belongs in PREFECT_HOME"
    assert_rotated(iam, connections, user, old)
