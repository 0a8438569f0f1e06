"""Helpers shared by the integration tests (no side effects on import)."""

from __future__ import annotations

import subprocess
import sys


def keyrotor_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
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
