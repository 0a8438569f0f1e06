"""``make demo`` runs ``keyrotor demo``: it must finish, as README promises, with every application call served."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from keyrotor.stack.services import LocalStack

pytestmark = pytest.mark.integration


def test_demo_rotates_the_demo_users_with_zero_application_errors(stack: LocalStack) -> None:
    """On the session's stack (``keyrotor demo`` starts the stack in its folder, or uses the one running there, as
    here); starting a stack from a private folder is ``test_local_stack.py``'s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_", "KEYROTOR_", "PREFECT_API"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyrotor",
            "demo",
            "--stack-dir",
            str(stack.stack_dir),
            "--moto-port",
            "0",
            "--vault-port",
            "0",
            "--prefect-port",
            "0",
            "--keep",
        ],
        env={**env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "demo passed" in out and "what happened" in out
    assert out.count("completed") >= 2 and "refused" in out
    assert "/runs" in out  # where to look in the Prefect UI
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything[-5000:]  # the refusal is expected: one line, not a traceback
