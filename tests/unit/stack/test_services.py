"""The local stack's services as classes: what each contributes, and that the stack handles them alike.

No server is started here, except one throwaway ``sleep`` process standing in for a service added by a subclass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from keyrotor.stack import catalog, services
from keyrotor.stack.catalog import PREFECT_DB_VARIABLE, MotoService, OpenBaoService, PostgresService, PrefectService
from keyrotor.stack.service import Launch, LaunchContext, Service, StackError, inherited_environment
from keyrotor.stack.services import (
    SERVICE_NAMES,
    LocalStack,
    read_stack,
    stack_env,
)


def test_services_start_in_order_and_keep_their_names() -> None:
    assert SERVICE_NAMES == ("moto", "vault", "postgres", "prefect")
    assert [catalog.service_type(name) for name in SERVICE_NAMES] == [
        MotoService,
        OpenBaoService,
        PostgresService,
        PrefectService,
    ]
    with pytest.raises(StackError, match="unknown service"):
        catalog.service_type("redis")


def test_stack_env_points_every_client_at_the_stack() -> None:
    assert stack_env(5000, 8200, 4200, "tok") == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "AWS_ACCESS_KEY_ID": "keyrotor-local-admin",
        "AWS_SECRET_ACCESS_KEY": "keyrotor-local-admin",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "VAULT_ADDR": "http://127.0.0.1:8200",
        "VAULT_TOKEN": "tok",
        "BAO_ADDR": "http://127.0.0.1:8200",
        "BAO_TOKEN": "tok",
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
    }
    assert stack_env(vault_port=1) == {
        "VAULT_ADDR": "http://127.0.0.1:1",
        "VAULT_TOKEN": "root",
        "BAO_ADDR": "http://127.0.0.1:1",
        "BAO_TOKEN": "root",
    }
    assert stack_env() == {}


def test_a_handle_env_is_in_start_order_whatever_order_its_services_came_in(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    stack = LocalStack(
        tmp_path,
        "tok",
        {
            "prefect": PrefectService(3, 4200, log),
            "postgres": PostgresService(4, 6000, log, tmp_path / "postgres"),
            "moto": MotoService(1, 5000, log),
        },
    )
    assert list(stack.env.items()) == list(stack_env(moto_port=5000, prefect_port=4200, vault_token="tok").items())


@pytest.mark.parametrize(
    ("database", "asked", "wanted"),
    [
        ("postgres", ("moto", "vault", "prefect"), {"moto", "vault", "prefect", "postgres"}),
        ("sqlite", ("moto", "vault", "prefect"), {"moto", "vault", "prefect"}),
        ("postgres", ("moto", "postgres"), {"moto"}),  # PostgreSQL only runs for Prefect
        ("postgres", ("postgres", "prefect"), {"prefect", "postgres"}),
        ("mysql", ("moto", "vault"), {"moto", "vault"}),  # the choice is only read when Prefect runs
    ],
)
def test_prefect_brings_its_database_along(
    monkeypatch: pytest.MonkeyPatch, database: str, asked: tuple[str, ...], wanted: set[str]
) -> None:
    monkeypatch.setenv(PREFECT_DB_VARIABLE, database)
    assert services._wanted(asked) == wanted


def test_state_file_round_trip_gives_each_service_its_class(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    recorded = {
        "moto": MotoService(11, 5000, logs / "moto.log"),
        "vault": OpenBaoService(12, 8200, logs / "vault.log"),
        "postgres": PostgresService(13, 6000, logs / "postgres.log", tmp_path / "postgres"),
        "prefect": PrefectService(14, 4200, logs / "prefect.log"),
    }
    services._write_state(LocalStack(tmp_path, "tok", recorded))

    state = json.loads((tmp_path / "stack.json").read_text())
    again = read_stack(tmp_path)

    assert state["services"]["postgres"] == {
        "pid": 13,
        "port": 6000,
        "log": str(logs / "postgres.log"),
        "url": "postgresql://keyrotor@127.0.0.1:6000/postgres",
        "data": str(tmp_path / "postgres"),
    }
    assert state["services"]["moto"]["url"] == "http://127.0.0.1:5000" and "data" not in state["services"]["moto"]
    assert again is not None and again.services == recorded and again.vault_token == "tok"


def test_prefect_runs_on_the_stacks_database_with_batching_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE", "7")
    database = PostgresService(1, 6000, tmp_path / "postgres.log")

    launch = PrefectService.prepare(LaunchContext(tmp_path, "tok", {"postgres": database}), 4300, tmp_path / "p.log")

    assert launch.command[-4:] == ["--host", "127.0.0.1", "--port", "4300"] and launch.cwd == tmp_path
    assert "PREFECT_API_URL" not in launch.env
    assert launch.env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"
    assert launch.env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert launch.env["PREFECT_API_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://keyrotor@127.0.0.1:6000/postgres"
    assert launch.env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE"] == "7"  # set by the caller: kept
    assert launch.env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "100"
    sqlite = PrefectService.prepare(LaunchContext(tmp_path, "tok", {}), 4300, tmp_path / "p.log")
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in sqlite.env


def test_moto_runs_the_gated_server_module(tmp_path: Path) -> None:
    launch = MotoService.prepare(LaunchContext(tmp_path, "tok", {}), 5001, tmp_path / "m.log")
    assert launch.command == [
        sys.executable,
        "-m",
        "keyrotor.stack.moto_server",
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
    ]
    assert MotoService.command_marker in " ".join(launch.command)


class _Sleeper(Service):
    """A service added by writing a class: the base class launches, recognises and stops it."""

    name = "sleeper"
    command_marker = "keyrotor-sleeper"

    def is_healthy(self, timeout: float = 2.0) -> bool:
        return self.is_alive()

    @classmethod
    def prepare(cls, context: LaunchContext, port: int, log: Path) -> Launch:
        command = [sys.executable, "-c", "import time, sys; time.sleep(60)", "keyrotor-sleeper"]
        return Launch(command, context.stack_dir, inherited_environment())


def test_a_new_service_is_just_a_class(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    sleeper = _Sleeper.launch(LaunchContext(tmp_path, "tok", {}), 0)
    try:
        sleeper.wait_healthy(10)
        assert sleeper.port > 0 and sleeper.is_alive()
        assert "starting sleeper" in (tmp_path / "logs" / "sleeper.log").read_text()
    finally:
        assert sleeper.stop()
    assert not sleeper.is_alive() and not sleeper.stop()
