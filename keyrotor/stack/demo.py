"""``keyrotor demo``: the whole story on the local stack in about two minutes.

It starts the stack, creates three users (an old key, a fresh key, two active keys), starts an application
per user that reads its key from Vault and keeps calling AWS (one slow to notice a new key), rotates every
user with short timings, and ends with a table: what changed, when, and how many application calls failed.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keyrotor.stack.services import LocalStack, StackPorts

DEMO_TIMINGS = {
    "KEYROTOR_QUIET_PERIOD": "3s",
    "KEYROTOR_POLL_INTERVAL": "1s",
    "KEYROTOR_MAX_WAIT": "60s",
    "KEYROTOR_GRACE_PERIOD": "0s",
    "KEYROTOR_LEASE_TTL": "15s",
}


@dataclass
class DemoUser:
    """One demo user: what it starts with, how its application behaves, and what happened."""

    case: str
    name: str
    keys: int
    age_days: int
    refresh: float
    expect: str
    old_key: str = ""
    outcome: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    errors: list[str] = field(default_factory=list)


def demo_users(run: str) -> list[DemoUser]:
    return [
        DemoUser("old key (120 days)", f"billing-{run}", keys=1, age_days=120, refresh=1, expect="completed"),
        DemoUser("fresh key, slow app", f"reports-{run}", keys=1, age_days=0, refresh=8, expect="completed"),
        DemoUser("two active keys", f"legacy-{run}", keys=2, age_days=200, refresh=1, expect="refused"),
    ]


def run_demo(stack_dir: Path, ports: StackPorts, stop_after: bool, console: Console) -> bool:
    """Run the demo; True when every rotation ended as expected and no application call failed."""
    console.rule("[bold]keyrotor demo")
    console.print(f"Starting the local stack in {stack_dir} (moto as IAM/STS, OpenBao as Vault, a Prefect server)...")
    stack = LocalStack.start(stack_dir, ports)
    for note in stack.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    try:
        os.environ.update(stack.env | DEMO_TIMINGS)
        return _run(stack, console)
    finally:
        if stop_after:
            _flush_prefect_logs()
            stack.stop(purge=True)
            console.print("Local stack stopped.")
        else:
            console.print(f"The stack keeps running; stop it with [bold]keyrotor stack down --dir {stack_dir}[/].")


def _run(stack: LocalStack, console: Console) -> bool:
    import boto3
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from keyrotor.adapters.connections import Connections
    from keyrotor.adapters.prefect_api import run_here
    from keyrotor.core.errors import KeyrotorError
    from keyrotor.core.inputs import RotationRequest, TimingFields
    from keyrotor.flows.rotate import rotate_access_key
    from keyrotor.settings import Settings
    from keyrotor.stack.seed import backdate_key, create_user_with_keys
    from keyrotor.stack.simulated_apps import SimulatedApp

    connections = Connections.from_settings()
    iam = boto3.client("iam")
    users = demo_users(uuid.uuid4().hex[:4])
    apps = {}
    now = datetime.now(UTC)
    for user in users:
        records = connections.records(user.name)
        key_ids = create_user_with_keys(iam, records, user.name, keys=user.keys)
        user.old_key = key_ids[0]
        for key_id in key_ids:
            backdate_key(
                stack.env["AWS_ENDPOINT_URL"],
                key_id,
                now - timedelta(days=user.age_days),
                last_used=now - timedelta(minutes=5),
            )
        apps[user.name] = SimulatedApp(user.name, records, refresh=user.refresh, interval=0.25)
        apps[user.name].start()
        console.print(f"  created [bold]{user.name}[/]: {user.case}; its app re-reads Vault every {user.refresh:g}s")

    prefect_url = stack.env["PREFECT_API_URL"]
    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: prefect_url}):
        for user in users:
            console.rule(f"rotating {user.name} ({user.case})")
            try:
                request = RotationRequest.parse(
                    {"user_name": user.name} | TimingFields.timing_values(Settings().timings)
                )
                state = run_here(rotate_access_key, request)
                user.report = state.to_json()
                user.outcome = state.phase.value
            except KeyrotorError as error:
                user.outcome = "refused"
                console.print(f"[yellow]refused, nothing changed:[/] {error}")
    for user in users:
        stats = apps[user.name].stop()
        user.calls, user.errors = stats.calls, stats.errors
    elapsed = time.monotonic() - started

    console.print(_table(users))
    ui = prefect_url.removesuffix("/api")
    console.print(f"Rotations took {elapsed:.0f}s. See every flow run, task and log in the Prefect UI: {ui}/runs")
    ok = all(user.outcome == user.expect and not user.errors for user in users)
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo did not go as expected[/]")
    return ok


def _flush_prefect_logs() -> None:
    """Send buffered flow-run logs to the Prefect server before it is stopped."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


def _table(users: list[DemoUser]) -> Table:
    table = Table("user", "keys: old -> new", "outcome", "timeline", "app calls / errors", title="what happened")
    for user in users:
        report = user.report
        start = report.get("started_at")
        timeline = ", ".join(
            f"{label} +{_seconds(start, report[name])}"
            for label, name in (
                ("published", "published_at"),
                ("deactivated", "deactivated_at"),
                ("deleted", "completed_at"),
            )
            if start and report.get(name)
        )
        table.add_row(
            f"{user.name}\n[dim]{user.case}[/]",
            f"{user.old_key}\n-> {report.get('new_key_id') or '(unchanged)'}",
            user.outcome,
            timeline or "-",
            f"{user.calls} / {len(user.errors)}",
        )
    return table


def _seconds(start: str, end: str) -> str:
    return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.1f}s"
