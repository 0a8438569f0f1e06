"""Start, stop and health-check the local stack: moto, an OpenBao dev server and a Prefect server on PostgreSQL.

Each service runs as a background process in its own session (so stopping it
kills its whole process group), listens on a loopback port, and logs to
``<stack_dir>/logs/<service>.log``. ``<stack_dir>/stack.json`` records pids,
ports and the Vault token, so another process can find or stop the stack.

This module handles the stack as a whole and never which service it is handling: what differs between services
lives in their classes (:mod:`keyrotor.stack.catalog`, on the base class of :mod:`keyrotor.stack.service`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from keyrotor.stack import processes
from keyrotor.stack.catalog import (
    SERVICE_TYPES,
    MotoService,
    OpenBaoService,
    PrefectService,
    service_type,
)
from keyrotor.stack.service import LaunchContext, Service, ServiceUnavailable, StackError

#: The services of the stack, in start order (Prefect's database before Prefect).
SERVICE_NAMES: tuple[str, ...] = tuple(kind.name for kind in SERVICE_TYPES)
STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackPorts:
    """Loopback ports of the services, by service name; 0 picks a free port.

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

    def port_of(self, name: str) -> int:
        """The port asked for the service called ``name``; 0 (any free port) for a service without a field here."""
        port: int = getattr(self, name, 0)
        return port


@dataclass(frozen=True)
class LocalStack:
    """A handle on the services running for one stack directory.

    Use :meth:`start` to get one; it is a context manager that stops the services on exit.

    Attributes:
        stack_dir: The directory holding ``stack.json`` and ``logs/``.
        vault_token: The OpenBao dev server's root token.
        services: The services by name.
        notes: What an operator must know about the start (see :meth:`start`).
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
        token = running.vault_token if running and OpenBaoService.name in kept else vault_token
        stack = cls(stack_dir, token, kept)
        wanted = _wanted(services)
        to_start = [kind for kind in SERVICE_TYPES if kind.name in wanted and kind.name not in kept]
        launched: list[Service] = []
        try:
            for kind in to_start:
                before = recorded.services.get(kind.name) if recorded else None
                port = _port_for(kind, ports.port_of(kind.name), before)
                context = LaunchContext(stack_dir, token, stack.services)
                try:
                    service = kind.launch(context, port)
                except ServiceUnavailable as unavailable:
                    processes.note(unavailable.log, unavailable.note)
                    notes.append(unavailable.note)
                    continue
                launched.append(service)
                if before is not None and before.port != service.port and kind.port_is_public:
                    notes.append(
                        f"{kind.name} was on port {before.port} and now listens on {service.port}: run "
                        f'`eval "$(keyrotor stack env --dir {stack_dir})"` again and restart `keyrotor serve`'
                    )
                stack = cls(stack_dir, token, {**stack.services, kind.name: service})
                _write_state(stack)
                if kind.needed_at_start:
                    service.wait_healthy(timeout)
            for service in launched:
                service.wait_healthy(timeout)
        except BaseException:
            cls(stack_dir, token, {s.name: s for s in launched}).stop()
            raise
        return cls(stack_dir, token, stack.services, tuple(notes))

    @property
    def env(self) -> dict[str, str]:
        """The environment block that points AWS, Vault and Prefect clients at this stack."""
        return _client_env({name: service.port for name, service in self.services.items()}, self.vault_token)

    def stop(self, purge: bool = False) -> list[str]:
        """Stop this handle's services and drop them from ``stack.json``.

        Args:
            purge: Also remove a PostgreSQL cluster that lives outside the stack folder (see
                :mod:`keyrotor.stack.postgres`); one inside it goes with the folder.

        Returns:
            Names of the services that were still running and have been stopped.
        """
        # Reverse start order: Prefect lets go of its database before PostgreSQL stops.
        stopped = [service.name for service in reversed(self.services.values()) if service.stop()]
        if purge:
            for service in self.services.values():
                service.purge(self.stack_dir)
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
    ports = {
        MotoService.name: moto_port,
        OpenBaoService.name: vault_port,
        PrefectService.name: prefect_port,
    }
    return _client_env({name: port for name, port in ports.items() if port is not None}, vault_token)


def read_stack(stack_dir: Path) -> LocalStack | None:
    """Read ``stack.json`` as recorded, whether or not its processes still run.

    Args:
        stack_dir: The stack directory.

    Returns:
        The recorded stack, or None when there is no ``stack.json``.

    Raises:
        StackError: ``stack.json`` names a service this version does not know.
    """
    state_file = stack_dir.resolve() / STATE_FILE
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    services = {
        name: service_type(name)(
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


def _wanted(services: Sequence[str]) -> set[str]:
    """The services to run for a request: those asked for that run on their own, and what they bring along."""
    kinds = [service_type(name) for name in services]
    return {kind.name for kind in kinds if kind.standalone} | {
        companion for kind in kinds for companion in kind.brings_along()
    }


def _client_env(ports: Mapping[str, int], vault_token: str) -> dict[str, str]:
    """The variables pointing clients at the services on ``ports`` (by name), in start order of the services."""
    env: dict[str, str] = {}
    for kind in SERVICE_TYPES:
        if kind.name in ports:
            env |= kind.client_env(ports[kind.name], vault_token)
    return env


def _port_for(kind: type[Service], requested: int, before: Service | None) -> int:
    """The port to start a service on: the one asked for; when any port will do (0), the one it had before, if
    that is free, so clients and ``keyrotor serve`` pointed at it keep working after a restart."""
    if requested != 0 or before is None or not kind.port_is_public:
        return requested
    deadline = time.monotonic() + 2  # a process that just died may hold its socket for a moment
    while processes.port_taken(before.port):
        if time.monotonic() > deadline:
            return requested
        time.sleep(processes.POLL_SECONDS)
    return before.port


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
