"""The services the local stack can run, one class each, and the order they start in.

* :class:`MotoService` is AWS IAM/STS: moto behind keyrotor's key gate (:mod:`keyrotor.stack.moto_server`).
* :class:`OpenBaoService` is Vault: an OpenBao dev server (in memory, KV v2 at ``secret/``).
* :class:`PostgresService` is the Prefect server's database, from :mod:`keyrotor.stack.postgres`; it only runs
  along with Prefect, and when it cannot run here Prefect falls back to SQLite.
* :class:`PrefectService` is the Prefect API and UI.

To add a service, write a :class:`~keyrotor.stack.service.Service` subclass and list it in :data:`SERVICE_TYPES`
where it should start (after what it needs).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import ClassVar

from keyrotor.stack import postgres
from keyrotor.stack.processes import LOOPBACK
from keyrotor.stack.service import (
    HttpService,
    Launch,
    LaunchContext,
    Service,
    ServiceUnavailable,
    StackError,
    inherited_environment,
)

#: Set to ``sqlite`` to run the stack's Prefect server on SQLite instead of PostgreSQL.
PREFECT_DB_VARIABLE = "KEYROTOR_STACK_PREFECT_DB"
#: The fake AWS credentials of the stack's administrator; moto lets any non-``AKIA`` key id through.
ADMIN_CREDENTIAL = "keyrotor-local-admin"
#: The module that runs moto behind the key gate; its name is also how a moto process is recognised.
MOTO_MODULE = "keyrotor.stack.moto_server"

#: Defaults for the stack's Prefect server (a variable already set wins).
PREFECT_SERVER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "2",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "2",
}


class MotoService(HttpService):
    """moto's IAM and STS, refusing the keys AWS refuses (see :mod:`keyrotor.stack.moto_server`)."""

    name = "moto"
    command_marker = MOTO_MODULE
    health_path = "/moto-api/config"

    @classmethod
    def prepare(cls, context: LaunchContext, port: int, log: Path) -> Launch:
        """Run the gated moto server with this interpreter, so it uses the installed moto and keyrotor."""
        command = [sys.executable, "-m", MOTO_MODULE, "--host", LOOPBACK, "--port", str(port)]
        return Launch(command, context.stack_dir, inherited_environment())

    @classmethod
    def client_env(cls, port: int, vault_token: str) -> dict[str, str]:
        """AWS's endpoint, the fake admin credentials, a region, and no EC2 metadata lookups (they would hang)."""
        return {
            "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{port}",
            "AWS_ACCESS_KEY_ID": ADMIN_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": ADMIN_CREDENTIAL,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


class OpenBaoService(HttpService):
    """An OpenBao dev server as Vault: in memory, unsealed, with a known root token.

    Its name stays ``vault``: that is what clients, ``stack.json`` and :class:`StackPorts` call it.
    """

    name = "vault"
    command_marker = "bao"
    health_path = "/v1/sys/health"

    @classmethod
    def prepare(cls, context: LaunchContext, port: int, log: Path) -> Launch:
        """Run ``bao server -dev`` with the stack's root token, not writing the token to ``~/.vault-token``."""
        command = [
            find_bao(),
            "server",
            "-dev",
            f"-dev-root-token-id={context.vault_token}",
            f"-dev-listen-address={LOOPBACK}:{port}",
            "-dev-no-store-token",
        ]
        return Launch(command, context.stack_dir, inherited_environment())

    @classmethod
    def client_env(cls, port: int, vault_token: str) -> dict[str, str]:
        """Both Vault's and OpenBao's variables, so either's CLI and hvac find the server."""
        vault_addr = f"http://{LOOPBACK}:{port}"
        return {"VAULT_ADDR": vault_addr, "VAULT_TOKEN": vault_token, "BAO_ADDR": vault_addr, "BAO_TOKEN": vault_token}


class PostgresService(Service):
    """The Prefect server's PostgreSQL: a throwaway cluster per stack directory (see :mod:`keyrotor.stack.postgres`).

    Only Prefect talks to it, so its port is private: any free one, never kept across restarts nor announced.
    """

    name = "postgres"
    command_marker = "postgres"
    port_is_public = False
    standalone = False
    needed_at_start = True  # Prefect's server needs its database up when it starts
    stop_signal = signal.SIGINT  # SIGTERM waits for its clients to leave; SIGINT is its "fast" shutdown

    @property
    def url(self) -> str:
        """The cluster's ``postgresql://`` URL."""
        return f"postgresql://{postgres.USER}@{LOOPBACK}:{self.port}/{postgres.DATABASE}"

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """Tell whether the server accepts connections (``pg_isready``)."""
        return postgres.is_ready(LOOPBACK, self.port, timeout)

    @classmethod
    def prepare(cls, context: LaunchContext, port: int, log: Path) -> Launch:
        """Create the cluster if needed; the server runs in it, as ``nobody`` under root (PostgreSQL refuses root).

        Raises:
            ServiceUnavailable: PostgreSQL cannot run here (not installed, or ``initdb`` failed).
        """
        try:
            data = postgres.data_dir(context.stack_dir)
            owner = postgres.run_as()
            postgres.init_cluster(data, log)
            command = postgres.server_command(data, LOOPBACK, port)
        except postgres.PostgresUnavailable as why:
            raise _without_postgres(context.stack_dir, why) from why
        return Launch(command, data, inherited_environment(), owner, data)

    @classmethod
    def spawn_failed(cls, context: LaunchContext, error: OSError) -> ServiceUnavailable:
        """A server that cannot even be executed (e.g. by ``nobody``) makes Prefect use SQLite, as a failed initdb."""
        return _without_postgres(context.stack_dir, error)

    def purge(self, stack_dir: Path) -> None:
        """Remove a cluster that had to live outside the stack folder; one inside it goes with the folder."""
        if self.data is not None and postgres.is_relocated(self.data, stack_dir):
            shutil.rmtree(self.data, ignore_errors=True)


def _without_postgres(stack_dir: Path, why: BaseException) -> ServiceUnavailable:
    """The note that Prefect runs on SQLite because PostgreSQL cannot run here, for Prefect's log and the operator."""
    note = f"PostgreSQL cannot run here ({why}); the Prefect server uses SQLite instead"
    return ServiceUnavailable(note, stack_dir / "logs" / f"{PrefectService.name}.log")


class PrefectService(HttpService):
    """The Prefect API and UI, on the stack's PostgreSQL unless ``KEYROTOR_STACK_PREFECT_DB=sqlite``."""

    name = "prefect"
    command_marker = "prefect"
    health_path = "/api/health"
    #: The database it runs on when PostgreSQL is chosen.
    database: ClassVar[type[Service]] = PostgresService

    @classmethod
    def brings_along(cls) -> tuple[str, ...]:
        """Its PostgreSQL, unless SQLite is chosen.

        Raises:
            StackError: ``KEYROTOR_STACK_PREFECT_DB`` is neither ``postgres`` nor ``sqlite``.
        """
        return (cls.database.name,) if prefect_on_postgres() else ()

    @classmethod
    def prepare(cls, context: LaunchContext, port: int, log: Path) -> Launch:
        """Run ``prefect server start`` with this interpreter, in the environment of :meth:`environment`."""
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)]
        return Launch(command, context.stack_dir, cls.environment(context, port))

    @classmethod
    def environment(cls, context: LaunchContext, port: int) -> dict[str, str]:
        """Prefect gets its own home, no analytics, its UI its own API, and the stack's PostgreSQL as its database
        when there is one."""
        env = inherited_environment()
        env.pop("PREFECT_API_URL", None)
        env |= {
            "PREFECT_HOME": str(context.stack_dir / "prefect"),
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
        database = context.running.get(cls.database.name)
        if database is not None:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.database_url(LOOPBACK, database.port)
        return env

    @classmethod
    def client_env(cls, port: int, vault_token: str) -> dict[str, str]:
        """Prefect's API URL, for the CLI, flows and workers."""
        return {"PREFECT_API_URL": f"http://{LOOPBACK}:{port}/api"}


#: The services of the stack, in start order (a service after what it needs: Prefect's database before Prefect).
SERVICE_TYPES: tuple[type[Service], ...] = (MotoService, OpenBaoService, PostgresService, PrefectService)


def service_type(name: str) -> type[Service]:
    """The class of the service called ``name``.

    Raises:
        StackError: No service has that name.
    """
    for kind in SERVICE_TYPES:
        if kind.name == name:
            return kind
    raise StackError(f"unknown service {name!r}; choose from {tuple(kind.name for kind in SERVICE_TYPES)}")


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


def prefect_on_postgres() -> bool:
    """Whether the stack's Prefect server gets PostgreSQL (the default) rather than SQLite."""
    choice = os.environ.get(PREFECT_DB_VARIABLE, "postgres").strip().lower()
    if choice not in ("postgres", "sqlite"):
        raise StackError(f"{PREFECT_DB_VARIABLE} must be postgres or sqlite, not {choice!r}")
    return choice == "postgres"
