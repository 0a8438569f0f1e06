"""Helpers shared by the integration tests (no side effects on import).

``keyrotor_cli`` runs the command line in this process (typer's runner, the environment swapped for the call):
the same code as the installed command, without paying Python's and Prefect's start-up (about 3 s of CPU) per
call. ``keyrotor_process`` runs it as its own process, as a user does: for what needs one (a process that kills
itself at a failpoint, two commands at once, Prefect's temporary server, signals).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: The environment a keyrotor command reads (the rest of the test process's environment is left as it is).
OWN_PREFIXES = ("AWS_", "VAULT_", "KEYROTOR_", "BAO_", "COLUMNS")


def keyrotor_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``keyrotor ARGS`` in this process with ``env``'s AWS, Vault and keyrotor settings and its Prefect API,
    and return what a process would have: exit code, stdout, stderr."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from keyrotor.cli.main import app

    assert "KEYROTOR_FAILPOINT" not in env and "KEYROTOR_STALL" not in env, "failpoints need keyrotor_process"
    if not env.get("PREFECT_API_URL"):  # the command starts Prefect's temporary server: in a process of its own
        return keyrotor_process(env, *args, timeout=timeout)
    wanted: dict[str, str | None] = {name: None for name in os.environ if name.startswith(OWN_PREFIXES)}
    wanted |= {name: value for name, value in env.items() if name.startswith(OWN_PREFIXES)}
    wanted["COLUMNS"] = env.get("COLUMNS", "250")  # or rich wraps and truncates at 80 columns, as in a pipe
    runner = CliRunner()
    with temporary_settings(updates={PREFECT_API_URL: env.get("PREFECT_API_URL")}):
        result = runner.invoke(app, list(args), env=wanted, catch_exceptions=False, terminal_width=250)
    return subprocess.CompletedProcess(["keyrotor", *args], result.exit_code, result.stdout, result.stderr)


def keyrotor_process(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the installed ``keyrotor`` command in its own process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "keyrotor", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def keyrotor_popen(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keyrotor", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop_process(process: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds (Prefect's workers can take long)."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a free loopback port answering with ``handler`` in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
