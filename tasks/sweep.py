"""Find rotations from the durable state alone, by listing keyrotor's records in Vault."""

from __future__ import annotations

from prefect import task

from keyrotor.connect import Connections
from keyrotor.model import Phase, utcnow
from keyrotor.settings import Settings
from keyrotor.tasks import STEP


@task(name="find-due-deletions", **STEP)
def due_deletions(settings: Settings) -> list[str]:
    """Users whose rotation is deactivated and past its grace period, in this account."""
    connections = Connections.from_settings(settings)
    folder = settings.state_path.format(account_id=connections.account_id, user_name="").rstrip("/")
    now = utcnow()
    due = []
    for entry in connections.kv.list(folder):
        user_name = entry.rstrip("/")
        state = connections.records(user_name).load_state()
        if state is not None and state.phase is Phase.DEACTIVATED and state.delete_after and state.delete_after <= now:
            due.append(user_name)
    return due
