"""keyrotor's deployments, in one table: what ``keyrotor serve`` serves, what ``prefect.yaml`` declares (a test keeps
the two equal), and every lookup of a deployment by name.

Pure data (no Prefect import until a flow is asked for), so anything may read it: the settings' default deletion
deployment and the waker's parking deployments come from here.

Schedules are written so the Prefect UI's deployment list can show them whole: "Every hour" fits its column where
"At 17 minutes past the hour every day" collapses to "+1".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect import Flow


@dataclass(frozen=True)
class Deployment:
    """One deployment: its flow (``keyrotor.flows.<module>:<function>``: a module of the installed package, so a
    worker needs the package installed, not this checkout), what it is for, and its schedule."""

    name: str
    entrypoint: str
    description: str
    cron: str | None = None
    interval: timedelta | None = None
    anchor: datetime | None = None
    tags: tuple[str, ...] = ("keyrotor",)
    extra: dict[str, Any] = field(default_factory=dict)
    active: bool = True  # False: the schedule is created off; an operator turns it on knowingly (UI, prefect CLI)

    @property
    def full_name(self) -> str:
        """``<flow name>/<deployment name>``, as ``run_deployment`` and the API name it (they are equal here)."""
        return f"{self.name}/{self.name}"

    def flow(self) -> Flow[..., Any]:
        """The flow function, imported from the entrypoint."""
        module, _, attribute = self.entrypoint.partition(":")
        flow: Flow[..., Any] = getattr(importlib.import_module(module), attribute)
        return flow


ROTATE = Deployment(
    "rotate-access-key",
    "keyrotor.flows.rotate:rotate_access_key",
    "Rotate one IAM user's access key: create, verify, publish to Vault, wait for quiet, deactivate, delete later.",
)
DELETE = Deployment(
    "delete-old-key",
    "keyrotor.flows.delete_old_key:delete_old_key_after_grace",
    "Delete a rotation's deactivated old key once its grace period is over (scheduled by rotations).",
)
ROLLBACK = Deployment(
    "rollback-rotation",
    "keyrotor.flows.rollback:rollback_rotation",
    "Return a user to the old key, refusing no call: reactivate it and restore its secret in Vault at once; "
    "deactivate the new key once it has gone unused for the quiet period (now: at once).",
)
SWEEP = Deployment(
    "finish-due-deletions",
    "keyrotor.flows.finish_due:finish_due_deletions",
    "Hourly safety net (at :17): delete every old key whose grace period is over, from Vault's records.",
    interval=timedelta(hours=1),
    anchor=datetime(2026, 1, 1, 0, 17, tzinfo=UTC),
)
RETIRE = Deployment(
    "retire-access-key",
    "keyrotor.flows.retire:retire_access_key",
    "Retire one key of a user without creating another (remediation of two active keys or an unused key).",
)
REMEDIATE = Deployment(
    "audit-and-remediate",
    "keyrotor.flows.remediate:audit_and_remediate",
    "Daily at 06:00 once turned on: audit the account against the access-key rules and remedy every flagged user "
    "(its schedule is off until an operator turns it on).",
    cron="0 6 * * *",
    active=False,
)
PAUSE = Deployment(
    "pause-rotation",
    "keyrotor.flows.pause:pause_rotation_flow",
    "Pause a user's rotation in any phase, also while it waits; resume it with Resume on its run.",
)

ALL: tuple[Deployment, ...] = (ROTATE, DELETE, ROLLBACK, SWEEP, RETIRE, REMEDIATE, PAUSE)
NAMES: tuple[str, ...] = tuple(deployment.name for deployment in ALL)
#: The deployments whose runs park while they wait (and can be paused from the UI while they work).
PARKING: tuple[Deployment, ...] = (ROTATE, RETIRE, ROLLBACK)
