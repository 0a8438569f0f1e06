"""The local stack's choice of database for Prefect, and the PostgreSQL it runs (no servers started here)."""

from __future__ import annotations

import pytest

from keyrotor.stack import postgres
from keyrotor.stack.catalog import PREFECT_DB_VARIABLE, prefect_on_postgres
from keyrotor.stack.service import StackError


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("postgres", True), (" SQLite ", False)])
def test_prefect_database_choice(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool) -> None:
    if value is None:
        monkeypatch.delenv(PREFECT_DB_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(PREFECT_DB_VARIABLE, value)
    assert prefect_on_postgres() is expected


def test_unknown_prefect_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFECT_DB_VARIABLE, "mysql")
    with pytest.raises(StackError, match="postgres or sqlite"):
        prefect_on_postgres()


def test_server_listens_on_loopback_tcp_only() -> None:
    command = postgres.server_command(postgres.bin_dir() / "data", "127.0.0.1", 5555)
    settings = dict(part.split("=", 1) for part in command[command.index("-p") + 3 :: 2])
    assert command[0].endswith("/postgres") and command[command.index("-p") + 1] == "5555"
    assert settings["listen_addresses"] == "127.0.0.1" and settings["unix_socket_directories"] == ""
    assert postgres.database_url("127.0.0.1", 5555) == "postgresql+asyncpg://keyrotor@127.0.0.1:5555/postgres"
    assert (postgres.bin_dir() / "initdb").exists() and (postgres.bin_dir() / "pg_isready").exists()
