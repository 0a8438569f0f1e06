"""Start, stop and health-check the local stack: moto, an OpenBao dev server and a Prefect server on PostgreSQL.

Each service runs as a background process in its own session (so stopping it
kills its whole process group), listens on a loopback port, and logs to
``<stack_dir>/logs/<service>.log``. ``<stack_dir>/stack.json`` records pids,
ports and the Vault token, so another process can find or stop the stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from keyrotor.stack import postgres

#: The services of the stack, in start order (Prefect's database before Prefect).
SERVICE_NAMES: tuple[str, ...] = ("moto", "vault", "postgres", "prefect")
#: Set to ``sqlite`` to run the stack's Prefect server on SQLite instead of PostgreSQL.
PREFECT_DB_VARIABLE = "KEYROTOR_STACK_PREFECT_DB"
#: The fake AWS credentials of the stack's administrator; moto lets any non-``AKIA`` key id through.
ADMIN_CREDENTIAL = "keyrotor-local-admin"
LOOPBACK = "127.0.0.1"
STATE_FILE = "stack.json"

_HEALTH_PATHS = {"moto": "/moto-api/config", "vault": "/v1/sys/health", "prefect": "/api/health"}
# A substring of each service's command line, to avoid signalling a process that reused a recorded pid.
_COMMAND_MARKERS = {"moto": "keyrotor.stack.moto_server", "vault": "bao", "postgres": "postgres", "prefect": "prefect"}
_POLL_SECONDS = 0.2
_STOP_SECONDS = 10.0
# Processes this interpreter started, so that they are reaped (not left as zombies) once stopped.
_children: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A service of the local stack could not be started or found."""


@dataclass(frozen=True)
class StackPorts:
    """Loopback ports of the services; 0 picks a free port.

    Attributes:
        moto: Port of moto's IAM/STS endpoint.
        vault: Port of the OpenBao (Vault API) dev server.
        prefect: Port of the Prefect API and UI.
        postgres: Port of the Prefect server's PostgreSQL (default: a free one).
    """

    moto: int = 5000
    vault: int = 8200
    prefect: int = 4200
    postgres: int = 0


@dataclass(frozen=True)
class Service:
    """One running (or recorded) service process.

    Attributes:
        name: ``moto``, ``vault``, ``postgres`` or ``prefect``.
        pid: Process id, which is also the process group id.
        port: The loopback port it listens on.
        log: Its log file.
        data: PostgreSQL's cluster folder (None for the other services).
    """

    name: str
    pid: int
    port: int
    log: Path
    data: Path | None = None

    @property
    def url(self) -> str:
        """The service's base URL, e.g. ``http://127.0.0.1:5000`` (PostgreSQL: its ``postgresql://`` URL)."""
        if self.name == "postgres":
            return f"postgresql://{postgres.USER}@{LOOPBACK}:{self.port}/{postgres.DATABASE}"
        return f"http://{LOOPBACK}:{self.port}"

    def is_alive(self) -> bool:
        """Tell whether the recorded process still runs and is this service.

        Returns:
            True when the pid runs and (where ``/proc`` exists) its command line is the service's.
        """
        if not _pid_running(self.pid):
            return False
        if not Path("/proc/self").exists():
            return True
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return _COMMAND_MARKERS[self.name] in cmdline

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """Ask the service's health endpoint whether it serves.

        Args:
            timeout: Seconds to wait for the answer.

        Returns:
            True when the health endpoint answers with HTTP 2xx (for PostgreSQL: when it accepts connections).
        """
        if self.name == "postgres":
            return postgres.is_ready(LOOPBACK, self.port, timeout)
        try:
            with urllib.request.urlopen(self.url + _HEALTH_PATHS[self.name], timeout=timeout) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError):
            return False


@dataclass(frozen=True)
class LocalStack:
    """A handle on the services running for one stack directory.

    Use :meth:`start` to get one; it is a context manager that stops the services on exit.

    Attributes:
        stack_dir: The directory holding ``stack.json`` and ``logs/``.
        vault_token: The OpenBao dev server's root token.
        services: The services by name.
    """

    stack_dir: Path
    vault_token: str
    services: dict[str, Service]
    notes: tuple[str, ...] = ()

    @classmethod
    def start(
        cls,
        stack_dir: Path,
        ports: StackPorts = StackPorts(),
        services: Sequence[str] = SERVICE_NAMES,
        vault_token: str = "root",
        timeout: float = 90.0,
    ) -> LocalStack:
        """Start the services that are not already running in ``stack_dir`` and wait until healthy.

        Services already running and healthy for ``stack_dir`` are kept as they are (with their
        ports and, for Vault, their token) and are part of the returned handle.

        Args:
            stack_dir: Directory for ``stack.json``, ``logs/`` and Prefect's home; created if missing.
            ports: Ports for the services to start; 0 picks a free port.
            services: Which of ``moto``, ``vault``, ``prefect`` to run; ``prefect`` brings ``postgres`` along
                unless ``KEYROTOR_STACK_PREFECT_DB=sqlite``, or PostgreSQL cannot run here (then Prefect uses
                SQLite and its log says why).
            vault_token: Root token for a newly started OpenBao dev server.
            timeout: Seconds each new service may take to become healthy.

        Returns:
            The handle on all services running for ``stack_dir``; its ``notes`` say, one line each, what an
            operator must know: a fallback to SQLite, a service that came back on another port.

        Raises:
            StackError: A service name is unknown, a port is taken, ``bao`` is missing, or a
                service did not become healthy in time (the message names its log file).
        """
        unknown = set(services) - set(SERVICE_NAMES)
        if unknown:
            raise StackError(f"unknown services {sorted(unknown)}; choose from {SERVICE_NAMES}")
        stack_dir = stack_dir.resolve()
        (stack_dir / "logs").mkdir(parents=True, exist_ok=True)
        recorded = read_stack(stack_dir)
        running = load_running(stack_dir)
        kept = dict(running.services) if running else {}
        notes: list[str] = []
        token = running.vault_token if running and "vault" in kept else vault_token
        stack = cls(stack_dir, token, kept)
        wanted = (set(services) - {"postgres"}) | (
            {"postgres"} if "prefect" in services and _prefect_on_postgres() else set()
        )
        to_start = [name for name in SERVICE_NAMES if name in wanted and name not in kept]
        launched: list[Service] = []
        try:
            for name in to_start:
                database = stack.services.get("postgres")
                before = recorded.services.get(name) if recorded else None
                port = _port_for(name, getattr(ports, name), before)
                try:
                    launched.append(_launch(stack_dir, name, port, token, database))
                except postgres.PostgresUnavailable as why:
                    note = f"PostgreSQL cannot run here ({why}); the Prefect server uses SQLite instead"
                    _note(stack_dir / "logs" / "prefect.log", note)
                    notes.append(note)
                    continue
                if before is not None and before.port != launched[-1].port and name != "postgres":
                    notes.append(
                        f"{name} was on port {before.port} and now listens on {launched[-1].port}: run "
                        f'`eval "$(keyrotor stack env --dir {stack_dir})"` again and restart `keyrotor serve`'
                    )
                stack = cls(stack_dir, token, {**stack.services, name: launched[-1]})
                _write_state(stack)
                if name == "postgres":  # Prefect's server needs its database up when it starts
                    _wait_healthy(launched[-1], timeout)
            for service in launched:
                _wait_healthy(service, timeout)
        except BaseException:
            cls(stack_dir, token, {s.name: s for s in launched}).stop()
            raise
        return cls(stack_dir, token, stack.services, tuple(notes))

    @property
    def env(self) -> dict[str, str]:
        """The environment block that points AWS, Vault and Prefect clients at this stack."""
        return stack_env(
            moto_port=self._port("moto"),
            vault_port=self._port("vault"),
            prefect_port=self._port("prefect"),
            vault_token=self.vault_token,
        )

    def stop(self, purge: bool = False) -> list[str]:
        """Stop this handle's services and drop them from ``stack.json``.

        Args:
            purge: Also remove a PostgreSQL cluster that lives outside the stack folder (see
                :mod:`keyrotor.stack.postgres`); one inside it goes with the folder.

        Returns:
            Names of the services that were still running and have been stopped.
        """
        # Reverse start order: Prefect lets go of its database before PostgreSQL stops.
        stopped = [service.name for service in reversed(self.services.values()) if _stop_service(service)]
        if purge:
            for service in self.services.values():
                if service.data is not None and postgres.is_relocated(service.data, self.stack_dir):
                    shutil.rmtree(service.data, ignore_errors=True)
        recorded = read_stack(self.stack_dir)
        if recorded is not None:
            remaining = {n: s for n, s in recorded.services.items() if n not in self.services}
            _write_state(LocalStack(self.stack_dir, recorded.vault_token, remaining))
        return stopped

    def __enter__(self) -> Self:
        """Return the handle itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the services and purge what they left outside the stack folder."""
        self.stop(purge=True)

    def _port(self, name: str) -> int | None:
        """Port of a service of this handle, or None when it is not part of it."""
        service = self.services.get(name)
        return service.port if service else None


def stack_env(
    moto_port: int | None = None,
    vault_port: int | None = None,
    prefect_port: int | None = None,
    vault_token: str = "root",
) -> dict[str, str]:
    """Build the environment block for clients of the local stack.

    The credentials are the stack's fake local admin credentials, safe to print.

    Args:
        moto_port: moto's port; None leaves out the AWS variables.
        vault_port: OpenBao's port; None leaves out the Vault/OpenBao variables.
        prefect_port: Prefect's port; None leaves out ``PREFECT_API_URL``.
        vault_token: The OpenBao root token.

    Returns:
        Variable names to values.
    """
    env: dict[str, str] = {}
    if moto_port is not None:
        env |= {
            "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{moto_port}",
            "AWS_ACCESS_KEY_ID": ADMIN_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": ADMIN_CREDENTIAL,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    if vault_port is not None:
        vault_addr = f"http://{LOOPBACK}:{vault_port}"
        env |= {
            "VAULT_ADDR": vault_addr,
            "VAULT_TOKEN": vault_token,
            "BAO_ADDR": vault_addr,
            "BAO_TOKEN": vault_token,
        }
    if prefect_port is not None:
        env["PREFECT_API_URL"] = f"http://{LOOPBACK}:{prefect_port}/api"
    return env


def read_stack(stack_dir: Path) -> LocalStack | None:
    """Read ``stack.json`` as recorded, whether or not its processes still run.

    Args:
        stack_dir: The stack directory.

    Returns:
        The recorded stack, or None when there is no ``stack.json``.
    """
    state_file = stack_dir.resolve() / STATE_FILE
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    services = {
        name: Service(
            name=name,
            pid=int(entry["pid"]),
            port=int(entry["port"]),
            log=Path(entry["log"]),
            data=Path(entry["data"]) if entry.get("data") else None,
        )
        for name, entry in state["services"].items()
    }
    return LocalStack(stack_dir.resolve(), str(state["vault_token"]), services)


def load_running(stack_dir: Path) -> LocalStack | None:
    """Find the services of ``stack_dir`` that are alive and healthy.

    Args:
        stack_dir: The stack directory.

    Returns:
        A handle on the running services, or None when none runs.
    """
    recorded = read_stack(stack_dir)
    if recorded is None:
        return None
    running = {n: s for n, s in recorded.services.items() if s.is_alive() and s.is_healthy()}
    return LocalStack(recorded.stack_dir, recorded.vault_token, running) if running else None


def stop_stack(stack_dir: Path, purge: bool = False) -> list[str]:
    """Stop every service recorded in ``stack_dir/stack.json`` and remove the file.

    Args:
        stack_dir: The stack directory.
        purge: Also remove a PostgreSQL cluster kept outside the stack folder.

    Returns:
        Names of the services that were still running and have been stopped.
    """
    recorded = read_stack(stack_dir)
    return recorded.stop(purge=purge) if recorded else []


def find_bao() -> str:
    """Locate the OpenBao binary: next to the running Python first, then on ``PATH``.

    Returns:
        The path of ``bao``.

    Raises:
        StackError: ``bao`` is not installed.
    """
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("bao")
    if on_path is None:
        raise StackError("OpenBao's `bao` was not found; install it with: pip install 'keyrotor[stack]'")
    return on_path


def _command(name: str, port: int, vault_token: str) -> list[str]:
    """The command line that runs moto, OpenBao or Prefect on ``port`` (PostgreSQL's is in :mod:`postgres`)."""
    if name == "moto":
        return [sys.executable, "-m", "keyrotor.stack.moto_server", "--host", LOOPBACK, "--port", str(port)]
    if name == "vault":
        return [
            find_bao(),
            "server",
            "-dev",
            f"-dev-root-token-id={vault_token}",
            f"-dev-listen-address={LOOPBACK}:{port}",
            "-dev-no-store-token",
        ]
    return [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)]


#: Defaults for the stack's Prefect server (a variable already set wins).
PREFECT_SERVER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "2",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "2",
}


def _environment(name: str, stack_dir: Path, port: int, database: Service | None) -> dict[str, str]:
    """The environment a service runs with; Prefect gets its own home, no analytics, its UI its own API, and
    the stack's PostgreSQL as its database when there is one."""
    env = dict(os.environ)
    if name == "prefect":
        env.pop("PREFECT_API_URL", None)
        env |= {
            "PREFECT_HOME": str(stack_dir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://{LOOPBACK}:{port}/api",  # else the UI calls port 4200 whatever the port
            # On SQLite writes wait for each other: under many concurrent flow runs the default 10 s gives 503s.
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
        }
        # The task run recorder inserts one task run state per statement by default, the event persister 20 events;
        # a fleet of rotations sends thousands, and larger batches (at most 2 s late in the UI) take a third of
        # the server's CPU per rotation off.
        for setting, value in PREFECT_SERVER_BATCHING.items():
            env.setdefault(setting, value)
        if database is not None:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.database_url(LOOPBACK, database.port)
    return env


def _prefect_on_postgres() -> bool:
    """Whether the stack's Prefect server gets PostgreSQL (the default) rather than SQLite."""
    choice = os.environ.get(PREFECT_DB_VARIABLE, "postgres").strip().lower()
    if choice not in ("postgres", "sqlite"):
        raise StackError(f"{PREFECT_DB_VARIABLE} must be postgres or sqlite, not {choice!r}")
    return choice == "postgres"


def _launch(stack_dir: Path, name: str, port: int, vault_token: str, database: Service | None = None) -> Service:
    """Start one service in its own session, logging to ``logs/<name>.log``.

    Raises:
        postgres.PostgresUnavailable: ``name`` is ``postgres`` and it cannot run here.
    """
    port = port or _free_port()
    if _port_taken(port):
        raise StackError(f"port {port} for {name} is in use; pick another port, or 0 for a free one")
    log = stack_dir / "logs" / f"{name}.log"
    _note(log, f"starting {name}")
    cwd, owner, data = stack_dir, {}, None
    if name == "postgres":
        data = postgres.data_dir(stack_dir)
        cwd, owner = data, postgres.run_as()
        postgres.init_cluster(data, log)
        command = postgres.server_command(data, LOOPBACK, port)
    else:
        command = _command(name, port, vault_token)
    with log.open("ab") as log_file:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=_environment(name, stack_dir, port, database),
                start_new_session=True,
                **owner,
            )
        except OSError as error:
            if name == "postgres":
                raise postgres.PostgresUnavailable(str(error)) from error
            raise
    _children[process.pid] = process
    return Service(name=name, pid=process.pid, port=port, log=log, data=data)


def _port_for(name: str, requested: int, before: Service | None) -> int:
    """The port to start ``name`` on: the one asked for; when any port will do (0), the one it had before, if
    that is free, so clients and ``keyrotor serve`` pointed at it keep working after a restart."""
    if requested != 0 or before is None or name == "postgres":
        return requested
    deadline = time.monotonic() + 2  # a process that just died may hold its socket for a moment
    while _port_taken(before.port):
        if time.monotonic() > deadline:
            return requested
        time.sleep(_POLL_SECONDS)
    return before.port


def _note(log: Path, message: str) -> None:
    """Append one line from keyrotor to a service's log."""
    with log.open("ab") as log_file:
        log_file.write(f"--- keyrotor stack: {message} at {datetime.now(UTC)}\n".encode())


def _wait_healthy(service: Service, timeout: float) -> None:
    """Wait until a new service answers its health check.

    Raises:
        StackError: The process exited, or stayed unhealthy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not service.is_healthy():
        if not _pid_running(service.pid):
            raise StackError(f"{service.name} exited during start-up; see {service.log}:\n{_tail(service.log)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"{service.name} did not become healthy on port {service.port} within {timeout:.0f} s; "
                f"see {service.log}:\n{_tail(service.log)}"
            )
        time.sleep(_POLL_SECONDS)


def _stop_service(service: Service) -> bool:
    """Terminate a service's process group, and kill it if it outlives ``_STOP_SECONDS``.

    Returns:
        True when the service was running.
    """
    if not service.is_alive():
        return False
    # PostgreSQL's SIGTERM waits for its clients to leave; SIGINT is its "fast" shutdown.
    _signal_group(service.pid, signal.SIGINT if service.name == "postgres" else signal.SIGTERM)
    if not _exited(service.pid, _STOP_SECONDS):
        _signal_group(service.pid, signal.SIGKILL)
        _exited(service.pid, _STOP_SECONDS)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a process to end; tell whether it did."""
    deadline = time.monotonic() + timeout
    while _pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS / 2)
    return True


def _pid_running(pid: int) -> bool:
    """Tell whether a process runs, reaping it first if this interpreter started it."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_state(stack: LocalStack) -> None:
    """Record the stack in ``stack.json`` atomically, or remove the file when no service is left."""
    state_file = stack.stack_dir / STATE_FILE
    if not stack.services:
        state_file.unlink(missing_ok=True)
        return
    state = {
        "vault_token": stack.vault_token,
        "services": {
            s.name: {"pid": s.pid, "port": s.port, "log": str(s.log), "url": s.url}
            | ({"data": str(s.data)} if s.data else {})
            for s in stack.services.values()
        },
    }
    partial = state_file.with_suffix(".json.tmp")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.replace(state_file)


def _free_port() -> int:
    """Ask the OS for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_taken(port: int) -> bool:
    """Tell whether something already listens on a loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, or an empty string if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
