"""Fixtures of the integration tests beyond the session's stack (tests/conftest.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrotor.stack.services import LocalStack, StackPorts, stop_stack
from tests.conftest import OUTPUT


@pytest.fixture(scope="session", autouse=True)
def no_secret_left_behind(stack: LocalStack, stack_environ: dict[str, str]) -> Iterator[None]:
    """At the end of this session (each worker's, in a parallel run), before its servers stop: no secret that Vault
    ever held is in anything the session wrote (test_secret_hygiene.py checks one rotation's trail in detail)."""
    yield
    from keyrotor.adapters.connections import Connections
    from tests.integration.hygiene import secrets_ever_published, where_secrets_are

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as scratch:
        for name, value in stack_environ.items():
            if name.startswith(("AWS_", "VAULT_", "KEYROTOR_")):
                patch.setenv(name, value)
        secrets = secrets_ever_published(Connections.from_settings())
        found = where_secrets_are(stack, secrets, Path(scratch)) if secrets else []
    assert found == [], f"secrets found in {found}"


@pytest.fixture(scope="session")
def own_server(stack_environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """A second Prefect server (on PostgreSQL) beside the stack's, for the tests that restart it, deploy to it, or run
    runners and workers with settings of their own (the stack's `keyrotor serve` would take their runs there); yields
    the environment pointing at it. Each test stops the runners and workers it started; everything recorded in the
    server's folder is stopped at the end, whichever process started it."""
    own = LocalStack.start(OUTPUT / "own-prefect", StackPorts(0, 0, 0), services=("prefect",))
    try:
        yield {**stack_environ, "PREFECT_API_URL": own.env["PREFECT_API_URL"]}
    finally:
        stop_stack(OUTPUT / "own-prefect", purge=True)
