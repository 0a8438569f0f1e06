"""What every service of the local stack is: a process on a loopback port that can be started, checked and stopped.

:class:`Service` is both the description of a kind of service (its class: how to launch it, how to tell that it
serves, how clients reach it) and one running, or recorded, process of that kind (an instance: pid, port, log).
Everything that differs between moto, OpenBao, PostgreSQL and Prefect is a class attribute or an overridden method
of a subclass (see :mod:`keyrotor.stack.catalog`), so :class:`~keyrotor.stack.services.LocalStack` never asks
which service it is handling, and adding a service means adding a subclass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Self

from keyrotor.stack import processes
from keyrotor.stack.processes import LOOPBACK


class StackError(RuntimeError):
    """A service of the local stack could not be started or found."""


class ServiceUnavailable(RuntimeError):
    """A service cannot run on this machine, and the stack goes on without it (the service that would have used it
    falls back to something else).

    Attributes:
        note: One line for the operator saying what was lost and what is used instead.
        log: The log of the service that falls back, where the note is written too.
    """

    def __init__(self, note: str, log: Path) -> None:
        super().__init__(note)
        self.note = note
        self.log = log


@dataclass(frozen=True)
class LaunchContext:
    """What a service being started may need to know about the stack it joins.

    Attributes:
        stack_dir: The stack directory (absolute).
        vault_token: The root token of the stack's OpenBao.
        running: The stack's services already started, by name (e.g. the database a server should use).
    """

    stack_dir: Path
    vault_token: str
    running: Mapping[str, Service]


@dataclass(frozen=True)
class Launch:
    """How to run one service process.

    Attributes:
        command: Its command line.
        cwd: Its working directory.
        env: Its whole environment.
        owner: Extra ``subprocess.Popen`` arguments that choose the user it runs as (none: this process's user).
        data: The folder holding its data, recorded in ``stack.json`` (None when it keeps none of its own).
    """

    command: list[str]
    cwd: Path
    env: dict[str, str]
    owner: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None


@dataclass(frozen=True)
class Service(ABC):
    """One running (or recorded) service process; subclasses say which kind of service it is.

    Attributes:
        pid: Process id, which is also the process group id.
        port: The loopback port it listens on.
        log: Its log file.
        data: The folder of its data, for a service that keeps some (PostgreSQL's cluster); None otherwise.
    """

    #: The service's name in ``stack.json``, :class:`~keyrotor.stack.services.StackPorts` and the log file name.
    name: ClassVar[str]
    #: A substring of its command line, so that a process that reused a recorded pid is never signalled.
    command_marker: ClassVar[str]
    #: Whether clients are pointed at its port: then a restart where any port will do keeps the port it had (so
    #: clients and ``keyrotor serve`` keep working) and a restart on another port is announced.
    port_is_public: ClassVar[bool] = True
    #: Whether it runs when asked for by name; False for a service that only comes along with another.
    standalone: ClassVar[bool] = True
    #: Whether the services started after it need it serving when they start (not just eventually).
    needed_at_start: ClassVar[bool] = False
    #: The signal that asks it to stop soon (it is killed if it has not stopped after a while).
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    pid: int
    port: int
    log: Path
    data: Path | None = None

    @property
    def url(self) -> str:
        """The service's base URL, e.g. ``http://127.0.0.1:5000``."""
        return f"http://{LOOPBACK}:{self.port}"

    @abstractmethod
    def is_healthy(self, timeout: float = 2.0) -> bool:
        """Ask the service whether it serves.

        Args:
            timeout: Seconds to wait for the answer.

        Returns:
            True when it answers that it serves.
        """

    @classmethod
    @abstractmethod
    def prepare(cls, context: LaunchContext, port: int, log: Path) -> Launch:
        """Get everything ready to run the service on ``port`` and say how to run it.

        Args:
            context: The stack it joins.
            port: The port it is to listen on.
            log: Its log file, for the output of any preparation step.

        Returns:
            The command line, folder, environment and user to run it with.

        Raises:
            StackError: What it needs is missing.
            ServiceUnavailable: It cannot run here, and the stack can do without it.
        """

    @classmethod
    def brings_along(cls) -> tuple[str, ...]:
        """Names of the non-standalone services to run with this one (e.g. a server's database)."""
        return ()

    @classmethod
    def client_env(cls, port: int, vault_token: str) -> dict[str, str]:
        """Environment variables that point clients at this service on ``port``; none by default.

        Args:
            port: The service's port.
            vault_token: The stack's OpenBao root token.

        Returns:
            Variable names to values.
        """
        return {}

    @classmethod
    def launch(cls, context: LaunchContext, port: int) -> Self:
        """Start the service in its own session, logging to ``logs/<name>.log``; do not wait until it serves.

        Args:
            context: The stack it joins.
            port: The port to listen on; 0 picks a free one.

        Returns:
            The started service.

        Raises:
            StackError: The port is in use, or :meth:`prepare` found something missing.
            ServiceUnavailable: The service cannot run here.
            OSError: The process could not be started (unless :meth:`spawn_failed` says otherwise).
        """
        port = port or processes.free_port()
        if processes.port_taken(port):
            raise StackError(f"port {port} for {cls.name} is in use; pick another port, or 0 for a free one")
        log = context.stack_dir / "logs" / f"{cls.name}.log"
        processes.note(log, f"starting {cls.name}")
        launch = cls.prepare(context, port, log)
        with log.open("ab") as log_file:
            try:
                process = cls.spawn(launch, log_file)
            except OSError as error:
                instead = cls.spawn_failed(context, error)
                if instead is None:
                    raise
                raise instead from error
        processes.children[process.pid] = process
        return cls(pid=process.pid, port=port, log=log, data=launch.data)

    @classmethod
    def spawn(cls, launch: Launch, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
        """Run the process of :meth:`launch` in a new session, its output going to ``log_file``."""
        return subprocess.Popen(
            launch.command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=launch.cwd,
            env=launch.env,
            start_new_session=True,
            **launch.owner,
        )

    @classmethod
    def spawn_failed(cls, context: LaunchContext, error: OSError) -> Exception | None:
        """The error to raise when the process could not be started at all; None re-raises ``error`` as it is."""
        return None

    def is_alive(self) -> bool:
        """Tell whether the recorded process still runs and is this service.

        Returns:
            True when the pid runs and (where ``/proc`` exists) its command line is the service's.
        """
        if not processes.pid_running(self.pid):
            return False
        if not Path("/proc/self").exists():
            return True
        cmdline = processes.command_line(self.pid)
        return cmdline is not None and self.command_marker in cmdline

    def wait_healthy(self, timeout: float) -> None:
        """Wait until a newly started service answers its health check.

        Args:
            timeout: Seconds it may take.

        Raises:
            StackError: The process exited, or stayed unhealthy for ``timeout`` seconds (the message quotes its log).
        """
        deadline = time.monotonic() + timeout
        while not self.is_healthy():
            if not processes.pid_running(self.pid):
                raise StackError(f"{self.name} exited during start-up; see {self.log}:\n{processes.tail(self.log)}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} did not become healthy on port {self.port} within {timeout:.0f} s; "
                    f"see {self.log}:\n{processes.tail(self.log)}"
                )
            time.sleep(processes.POLL_SECONDS)

    def stop(self) -> bool:
        """Stop the service's process group: :attr:`stop_signal`, then SIGKILL if it outlives the grace time.

        Returns:
            True when the service was running.
        """
        if not self.is_alive():
            return False
        processes.stop_group(self.pid, self.stop_signal)
        return True

    def purge(self, stack_dir: Path) -> None:
        """Remove what the service keeps outside ``stack_dir`` (nothing by default); called after it stopped."""
        return None


class HttpService(Service):
    """A service whose health is an HTTP endpoint answering 2xx when it serves."""

    #: The path of the health endpoint.
    health_path: ClassVar[str]

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """Ask the service's health endpoint whether it serves.

        Args:
            timeout: Seconds to wait for the answer.

        Returns:
            True when the health endpoint answers with HTTP 2xx.
        """
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=timeout) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError):
            return False


def inherited_environment() -> dict[str, str]:
    """A copy of this process's environment, which services run with unless they need more."""
    return dict(os.environ)
