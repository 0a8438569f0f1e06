"""``keyrotor stack``: run the local stack (moto for IAM/STS, OpenBao for Vault, a Prefect server)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from keyrotor.stack.service import StackError
from keyrotor.stack.services import (
    SERVICE_NAMES,
    LocalStack,
    StackPorts,
    load_running,
    read_stack,
    stop_stack,
)

stack_app = typer.Typer(
    rich_markup_mode="markdown",  # paragraphs of a docstring are re-wrapped, `code` is shown as code
    name="stack",
    help=(
        "Run a local stack for keyrotor on loopback ports: moto as AWS IAM/STS (refusing inactive, "
        "deleted and wrongly-signed keys as AWS does), an OpenBao dev server as Vault (KV v2 at secret/), "
        "and a Prefect server. Everything is fake and local; the printed credentials are safe to share."
    ),
    no_args_is_help=True,
)

DirOption = Annotated[
    Path,
    typer.Option("--dir", help="Stack directory: holds stack.json (pids, ports), logs/ and Prefect's home."),
]


def export_lines(env: dict[str, str]) -> str:
    """Render an environment block as shell ``export`` lines.

    Args:
        env: Variable names to values.

    Returns:
        One ``export K=V`` line per variable, values shell-quoted.
    """
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items())


@stack_app.command()
def up(
    stack_dir: DirOption = Path(".stack"),
    moto_port: Annotated[int, typer.Option(help="Port for moto (IAM/STS); 0 picks a free port.")] = 5000,
    vault_port: Annotated[int, typer.Option(help="Port for the OpenBao dev server; 0 picks a free port.")] = 8200,
    prefect_port: Annotated[int, typer.Option(help="Port for the Prefect server; 0 picks a free port.")] = 4200,
    prefect: Annotated[bool, typer.Option("--prefect/--no-prefect", help="Also run a Prefect server.")] = True,
) -> None:
    """Start the stack in the background (services already running in --dir are kept) and print its env."""
    wanted = [name for name in SERVICE_NAMES if prefect or name not in ("prefect", "postgres")]
    already = load_running(stack_dir)
    kept = set(already.services) if already else set()
    to_start = [name for name in wanted if name not in kept]
    wait_note = " (Prefect's first start takes about 20 s)" if "prefect" in to_start else ""
    typer.echo(
        f"Starting {', '.join(to_start)} in {stack_dir}{wait_note}..."
        if to_start
        else f"Everything already runs in {stack_dir}."
    )
    try:
        stack = LocalStack.start(stack_dir, StackPorts(moto_port, vault_port, prefect_port), wanted)
    except StackError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from error
    for service in stack.services.values():
        state = "already running" if service.name in kept else "started"
        typer.echo(f"  {service.name:<8} {state:<16} {service.url}  (pid {service.pid})")
    for note in stack.notes:
        typer.echo(f"Note: {note}", err=True)
    typer.echo(f'\n# Point clients at the stack with: eval "$(keyrotor stack env --dir {stack_dir})"')
    typer.echo(export_lines(stack.env))
    typer.echo(f"\nLogs: {stack.stack_dir / 'logs'}")
    if "prefect" in stack.services:
        typer.echo(f"Prefect UI: {stack.services['prefect'].url}")
    typer.echo(f"Stop with: keyrotor stack down --dir {stack_dir}")


@stack_app.command()
def down(
    stack_dir: DirOption = Path(".stack"),
    purge: Annotated[
        bool,
        typer.Option(
            "--purge", help="Also delete Prefect's PostgreSQL data kept outside --dir (root, private folders)."
        ),
    ] = False,
) -> None:
    """Stop every service recorded in --dir and remove its stack.json."""
    stopped = stop_stack(stack_dir, purge=purge)
    typer.echo(f"Stopped {', '.join(stopped)}." if stopped else f"Nothing was running in {stack_dir}.")


@stack_app.command()
def env(stack_dir: DirOption = Path(".stack")) -> None:
    """Print the running stack's environment as export lines, for: eval "$(keyrotor stack env)"."""
    stack = load_running(stack_dir)
    if stack is None:
        typer.echo(f"No running stack in {stack_dir}; start one with: keyrotor stack up", err=True)
        raise typer.Exit(1)
    typer.echo(export_lines(stack.env))


@stack_app.command()
def status(
    stack_dir: DirOption = Path(".stack"),
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show each recorded service's pid, port, health and log; exit 1 unless all are healthy."""
    stack = read_stack(stack_dir)
    services = stack.services.values() if stack else []
    report = {
        s.name: {
            "pid": s.pid,
            "port": s.port,
            "url": s.url,
            "log": str(s.log),
            "alive": s.is_alive(),
            "healthy": s.is_healthy(),
        }
        for s in services
    }
    if as_json:
        typer.echo(json.dumps({"stack_dir": str(stack_dir.resolve()), "services": report}, indent=2))
    elif report:
        for name, entry in report.items():
            state = "healthy" if entry["healthy"] else "running, unhealthy" if entry["alive"] else "dead"
            typer.echo(f"{name:<8} {state:<18} {entry['url']}  pid {entry['pid']}  log {entry['log']}")
    else:
        typer.echo(f"No stack recorded in {stack_dir}.")
    if not report or not all(entry["healthy"] for entry in report.values()):
        raise typer.Exit(1)
