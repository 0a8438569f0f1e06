"""``keyrotor remediate`` on a small seeded fleet, against the real local servers."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import Pause, PauseKind, Phase, RotationState
from keyrotor.core.timings import Timings
from keyrotor.stack.seed import backdate_key
from tests.helpers import keyrotor_cli
from tests.integration.support import all_keys, required

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(
    iam: Any, connections: Connections, user_factory: Callable[..., str], stack_environ: dict[str, str]
) -> tuple[str, dict[str, str], dict[str, list[str]]]:
    """One user per case, all named ``rem-<run>-<case>``; returns the names and the key ids by case."""
    run = uuid.uuid4().hex[:6]
    endpoint = stack_environ["AWS_ENDPOINT_URL"]
    now = datetime.now(UTC)
    users: dict[str, str] = {}
    keys: dict[str, list[str]] = {}

    def user(
        case: str,
        count: int,
        age_days: int,
        used_days_ago: list[float | None],
        publish: int | None = 0,
        tags: dict[str, str] | None = None,
    ) -> None:
        name = f"rem-{run}-{case}"
        iam.create_user(UserName=name, Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()])
        created = [iam.create_access_key(UserName=name)["AccessKey"] for _ in range(count)]
        for key, days in zip(created, used_days_ago, strict=True):
            backdate_key(
                endpoint,
                key["AccessKeyId"],
                now - timedelta(days=age_days),
                None if days is None else now - timedelta(days=days),
            )
        if publish is not None and created:
            from pydantic import SecretStr

            from keyrotor.core.model import NewCredentials

            chosen = created[publish]
            connections.records(name).publish(
                NewCredentials(chosen["AccessKeyId"], SecretStr(chosen["SecretAccessKey"])), 0
            )
        users[case] = name
        keys[case] = [key["AccessKeyId"] for key in created]

    user("old", 1, 120, [0.5])
    user("two-vault", 2, 30, [0.1, 0.1], publish=1)  # keeps the second (in Vault), retires the first
    user("two-busy", 2, 30, [0.1, 0.2], publish=None)  # both in use, neither in Vault: needs a person
    user("unused", 1, 60, [None], publish=None)  # never used, 60 days old
    user("exempt", 1, 400, [None], tags={"keyrotor:exempt": "true"})
    user("fails", 1, 120, [0.5])
    user("blocked", 1, 120, [0.5])
    user("fine", 1, 5, [0.1])
    return run, users, keys


def snapshot(connections: Connections, users: dict[str, str]) -> dict[str, tuple[dict[str, str], int]]:
    iam = boto3.client("iam")
    return {
        name: (
            all_keys(iam, name),
            connections.records(name).kv.current_version(connections.records(name).paths.secret),
        )
        for name in users.values()
    }


def test_dry_run_prints_the_plan_and_changes_nothing(
    fleet: tuple[str, dict[str, str], dict[str, list[str]]], connections: Connections, stack_environ: dict[str, str]
) -> None:
    run, users, keys = fleet
    before = snapshot(connections, users)
    result = keyrotor_cli(stack_environ, "remediate", "--dry-run", "--json", "--user", f"rem-{run}-*")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    plans = {plan["user"]: plan for plan in report["plans"]}
    assert plans[users["old"]]["action"] == "rotate"
    assert (
        plans[users["two-vault"]]["action"],
        plans[users["two-vault"]]["key_id"],
        plans[users["two-vault"]]["keep_key_id"],
    ) == ("retire-extra-key", keys["two-vault"][0], keys["two-vault"][1])
    assert plans[users["two-busy"]]["action"] == "needs-a-person"
    assert plans[users["unused"]]["action"] == "deactivate-unused-key"
    assert users["exempt"] in {e["user"] for e in report["exempt"]} and users["exempt"] not in plans
    assert users["fine"] not in plans
    assert snapshot(connections, users) == before

    table = keyrotor_cli({**stack_environ, "COLUMNS": "250"}, "remediate", "--dry-run", "--user", f"rem-{run}-*")
    assert table.returncode == 0 and "remediation plan" in table.stdout and "needs-a-person" in table.stdout
    assert snapshot(connections, users) == before


@pytest.mark.parametrize("where", ["in-process", "served"])
def test_remediation_ends_compliant_except_the_person_and_the_injected_failure(
    where: str,
    request: pytest.FixtureRequest,
    fleet: tuple[str, dict[str, str], dict[str, list[str]]],
    iam: Any,
    connections: Connections,
    stack_environ: dict[str, str],
) -> None:
    """In process (no deployments) each user's remedy is a flow run in the remediation's process; with the
    deployments served it is a run of rotate-access-key or retire-access-key, pausable from the UI."""
    if where == "served":
        request.getfixturevalue("served")
        env = stack_environ
    else:  # Prefect's ephemeral server of its own: no deployments there
        env = {k: v for k, v in stack_environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(request.getfixturevalue("tmp_path"))
    run, users, keys = fleet
    # Inject trouble: one user's rotation is recorded as paused by another flow run (in progress: no second one
    # starts), another's record cannot be read (a person must look); neither stops the others.
    blocked = RotationState(
        "blocked01",
        users["blocked"],
        connections.account_id,
        Phase.PUBLISHED,
        Timings(quiet_period=timedelta(seconds=1), poll_interval=timedelta(seconds=1), max_wait=timedelta(seconds=60)),
        datetime.now(UTC),
        "test",
        old_key_id=keys["blocked"][0],
        pause=Pause(str(uuid.uuid4()), datetime.now(UTC), PauseKind.OPERATOR, "held for the test"),
    )
    connections.records(users["blocked"]).save_state(blocked, "test")
    unreadable = connections.records(users["fails"])
    unreadable.kv.write(unreadable.paths.state, {"phase": "no-such-phase"}, cas=None)
    busy_before = all_keys(iam, users["two-busy"])

    result = keyrotor_cli(
        env,
        "remediate",
        "--json",
        "--user",
        f"rem-{run}-*",
        "--max-concurrency",
        "3",
        "--quiet-period",
        "1s",
        "--poll-interval",
        "0.5s",
        "--grace-period",
        "0s",
        *(["--wait"] if where == "served" else []),
        timeout=400,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # people needed
    outcomes = {o["user"]: o for o in json.loads(result.stdout)["outcomes"]}
    assert outcomes[users["fails"]]["outcome"] == "needs-a-person"
    assert "cannot read" in outcomes[users["fails"]]["reason"]
    assert (
        outcomes[users["blocked"]]["outcome"] == "in-progress"
        and "has not ended" in outcomes[users["blocked"]]["reason"]
    )
    assert outcomes[users["two-busy"]]["outcome"] == "needs-a-person"
    for case in ("old", "two-vault", "unused"):
        assert outcomes[users[case]]["outcome"] == "completed", outcomes[users[case]]
    # Each user's remedy was a flow run of its own, tagged with the remediation it belongs to.
    run_ids = {case: outcomes[users[case]]["flow_run_id"] for case in ("old", "two-vault", "unused")}
    assert len(set(run_ids.values())) == 3 and all(run_ids.values())
    if where == "served":
        expected = {"old": "rotate-access-key", "two-vault": "retire-access-key", "unused": "retire-access-key"}
        for case, run_id in run_ids.items():
            with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/flow_runs/{run_id}", timeout=10) as response:
                user_run = json.load(response)
            with urllib.request.urlopen(
                f"{env['PREFECT_API_URL']}/flows/{user_run['flow_id']}", timeout=10
            ) as response:
                assert json.load(response)["name"] == expected[case]
            assert user_run["state"]["type"] == "COMPLETED" and "keyrotor-remediation" in user_run["tags"]
            assert any(tag.startswith("remediation:") for tag in user_run["tags"])

    assert all_keys(iam, users["two-busy"]) == busy_before  # untouched
    assert list(all_keys(iam, users["two-vault"])) == [keys["two-vault"][1]]
    assert all_keys(iam, users["unused"]) == {}
    old_keys = all_keys(iam, users["old"])
    assert len(old_keys) == 1 and keys["old"][0] not in old_keys
    assert required(connections.records(users["old"]).published()).key_id in old_keys

    audit = keyrotor_cli(stack_environ, "audit", "--json", "--user", f"rem-{run}-*")
    flagged = {finding["user"] for finding in json.loads(audit.stdout)["findings"]}
    assert flagged == {users["two-busy"], users["fails"], users["blocked"]}
