"""Find rotations from the durable state alone, by listing keyrotor's records in Vault."""

from __future__ import annotations

from keyrotor.adapters.connections import Connections
from keyrotor.core.decisions import deletion_due
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.timestamps import utcnow
from keyrotor.settings import Settings
from keyrotor.tasks import step


@step("find-due-deletions")
def due_deletions(settings: Settings) -> list[tuple[str, str]]:
    """(account, user) of every rotation with a key past its grace period (see
    :func:`~keyrotor.core.decisions.deletion_due`), in every account keyrotor has records for."""
    connections = Connections.from_settings(settings)
    now = utcnow()
    due = []
    for account in connections.accounts_with_records() or [connections.account_id]:
        for user_name in connections.users_with_records(account):
            try:
                state = connections.records(user_name, account).load_state()
            except KeyrotorError:
                continue  # an unreadable record is reported by fleet-status; it hides no other deletion
            if state is not None and deletion_due(state, now):
                due.append((account, user_name))
    return due
