"""Fixtures of the integration tests beyond the session's stack (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keyrotor.stack.services import LocalStack, StackPorts, stop_stack
from tests.conftest import OUTPUT


@pytest.fixture(scope="module")
def own_server(stack_environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """A Prefect server (on PostgreSQL) of this module's own; yields the environment pointing at it. Its tests
    restart it: everything recorded in its folder is stopped at the end, whichever process started it."""
    own = LocalStack.start(OUTPUT / "own-prefect", StackPorts(0, 0, 0), services=("prefect",))
    try:
        yield {**stack_environ, "PREFECT_API_URL": own.env["PREFECT_API_URL"]}
    finally:
        stop_stack(OUTPUT / "own-prefect", purge=True)
