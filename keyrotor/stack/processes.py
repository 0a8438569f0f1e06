"""Process and port plumbing shared by every service of the local stack.

Services run as background processes in sessions of their own, so that stopping one signals its whole process
group (a Prefect server's workers, PostgreSQL's backends) rather than leaving orphans. A pid recorded in
``stack.json`` may outlive its process, so every check here tolerates processes that are already gone. Processes
this interpreter started are kept in :data:`children` and polled, because a child that exited but was never
waited for stays a zombie that ``kill(pid, 0)`` still reports as running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: How often to look again at a process or a port that is not there yet.
POLL_SECONDS = 0.2
#: How long a service may take to stop after a signal before it gets the next, stronger one.
STOP_SECONDS = 10.0
#: Processes this interpreter started, so that they are reaped (not left as zombies) once stopped.
children: dict[int, subprocess.Popen[bytes]] = {}


def pid_running(pid: int) -> bool:
    """Tell whether a process runs, reaping it first if this interpreter started it."""
    child = children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_line(pid: int) -> str | None:
    """The command line of a running process from ``/proc``; None when it cannot be read (gone, or no ``/proc``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a process to end; tell whether it did."""
    deadline = time.monotonic() + timeout
    while pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS / 2)
    return True


def stop_group(pgid: int, first: signal.Signals) -> None:
    """Signal a process group with ``first`` and, if it outlives :data:`STOP_SECONDS`, kill it."""
    signal_group(pgid, first)
    if not exited(pgid, STOP_SECONDS):
        signal_group(pgid, signal.SIGKILL)
        exited(pgid, STOP_SECONDS)


def free_port() -> int:
    """Ask the OS for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_taken(port: int) -> bool:
    """Tell whether something already listens on a loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def note(log: Path, message: str) -> None:
    """Append one line from keyrotor to a service's log, so the log tells what keyrotor did and when."""
    with log.open("ab") as log_file:
        log_file.write(f"--- keyrotor stack: {message} at {datetime.now(UTC)}\n".encode())


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, or an empty string if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
