"""The ``keyrotor`` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from keyrotor.cli import audit, remediation, rotation
from keyrotor.cli.common import out
from keyrotor.cli.notifications import notifications_app
from keyrotor.stack.cli import stack_app

# Without PREFECT_API_URL, Prefect starts a temporary local server; its first start (database migrations)
# can take longer than Prefect's 20 s default on a small machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Prefect's client retries a server it cannot reach with backoffs of 2, 4, 8... s: 5 retries give up after about a
# minute, 7 ride out an outage of 2 to 4 minutes (keyrotor serve's flow runs inherit this environment).
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "7")


app = typer.Typer(
    rich_markup_mode="markdown",  # paragraphs of a docstring are re-wrapped, `code` is shown as code
    name="keyrotor",
    help=(
        "Rotate AWS IAM access keys without breaking the applications that use them.\n\n"
        "A rotation creates a new key, verifies it, publishes it to Vault (KV v2), waits until the old key "
        "has gone unused, deactivates it, and deletes it after a grace period. It is a resumable Prefect flow: "
        "run the same command again after any interruption and it continues where it stopped."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(notifications_app, name="notifications")
app.add_typer(stack_app, name="stack", help="Start, stop and inspect the local stack (moto IAM/STS, OpenBao, Prefect).")


def demo(
    stack_dir: Annotated[Path, typer.Option(help="Where the local stack keeps its state and logs.")] = Path(".stack"),
    moto_port: Annotated[int, typer.Option(help="moto's port (0: any free port).")] = 5000,
    vault_port: Annotated[int, typer.Option(help="OpenBao's port (0: any free port).")] = 8200,
    prefect_port: Annotated[int, typer.Option(help="Prefect server's port (0: any free port).")] = 4200,
    stop: Annotated[
        bool, typer.Option("--stop/--keep", help="Stop the stack at the end (default: keep it for the UI).")
    ] = False,
) -> None:
    """Start the local stack and rotate three demo users while simulated applications keep calling AWS.

    Ends with a table of what happened (keys, phases, times, application errors) and the Prefect UI's address.
    """
    from keyrotor.stack.demo import run_demo
    from keyrotor.stack.services import StackPorts

    if not run_demo(stack_dir, StackPorts(moto_port, vault_port, prefect_port), stop, out):
        raise typer.Exit(1)


def serve(
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most flow runs working at once; waiting ones hold none. [env: KEYROTOR_SERVE_LIMIT; default 4]"
        ),
    ] = None,
    wake: Annotated[
        bool, typer.Option("--wake/--no-wake", help="Also be a waker: resume parked rotations when their key is quiet.")
    ] = True,
) -> None:
    """Serve keyrotor's deployments to the Prefect server in PREFECT_API_URL, and wake parked rotations.

    Runs until interrupted. Flow runs started from the Prefect UI, by `keyrotor rotate` and `keyrotor remediate`,
    and scheduled deletions of old keys, run here, each in a process of its own, at most --limit at once. Run it on
    several machines to share the work: one of them at a time is the waker (a lease in Vault decides).
    """
    from keyrotor.deployments.serve import serve_all
    from keyrotor.settings import Settings

    serve_all(limit=limit or Settings().serve_limit, wake=wake)


def waker() -> None:
    """Be a waker until interrupted: check parked rotations when due, resume those whose key went quiet, make UI
    pauses never expire and restart runs whose process died.

    For workers (`prefect worker start`), which run flows but no waker: run one or more of these beside them, as
    long-lived processes (a systemd service, a sidecar container). Any number may run; the one holding the waker
    lease in Vault works, and another takes over within KEYROTOR_WAKER_LEASE_TTL (default 15s) when it dies.
    `keyrotor serve` runs a waker in a thread already.
    """
    import signal
    import threading

    from keyrotor.deployments.serve import log_to_stderr
    from keyrotor.waker.service import keep_waking

    log_to_stderr()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        keep_waking(stop)
    except KeyboardInterrupt:
        stop.set()


# The commands, in the order `keyrotor --help` lists them. `keyrotor audit` imports nothing heavy (no Prefect).
app.command()(rotation.rotate)
app.command()(rotation.status)
app.command()(rotation.consumers)
app.command()(rotation.pause)
app.command()(rotation.resume)
app.command()(rotation.rollback)
app.command()(rotation.finish)
app.command(name="audit")(audit.audit)
app.command()(remediation.remediate)
app.command(name="fleet-status")(remediation.fleet_status)
app.command()(serve)
app.command()(waker)
app.command()(demo)
