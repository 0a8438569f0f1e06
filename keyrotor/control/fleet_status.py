"""The fleet's progress at any time, from Vault's records alone: every user's rotation (or retirement), where it
stands, who waits on what and until when, who needs a person, who failed and why.

``keyrotor fleet-status`` prints it; the waker publishes it as the ``keyrotor-fleet`` artifact in the Prefect UI.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyrotor.adapters.connections import Connections
from keyrotor.control.view import RotationView, read_view
from keyrotor.core.durations import format_duration
from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import Phase, RotationState, to_record
from keyrotor.core.timestamps import utcnow

#: A check this late says nobody is waking rotations (every waker checks due rotations every few seconds).
OVERDUE = timedelta(minutes=1)


@dataclass(frozen=True)
class FleetEntry:
    """One user's rotation as the fleet view shows it: its view (the same as ``keyrotor status``'s and the
    artifact's), and how late its next check is, if it is."""

    view: RotationView
    overdue: timedelta | None = None

    @property
    def user(self) -> str:
        return self.view.user

    @property
    def state(self) -> RotationState:
        assert self.view.state is not None
        return self.view.state

    @property
    def status(self) -> str:
        return self.view.outlook.status

    @property
    def waiting_for(self) -> str:
        if self.overdue is None:
            return self.view.outlook.waiting_for
        late = format_duration(timedelta(seconds=round(self.overdue.total_seconds())))
        return f"{self.view.outlook.waiting_for} (check overdue by {late}: is a waker running?)"

    def to_json(self) -> dict[str, Any]:
        wait = self.view.wait
        return {
            "account_id": self.state.account_id,
            "user": self.user,
            "kind": self.state.kind.value,
            "rotation_id": self.state.rotation_id,
            "phase": self.state.phase.value,
            "old_key_id": self.state.old_key_id,
            "new_key_id": self.state.new_key_id,
            "next_check_at": wait.next_check_at.isoformat() if wait and not wait.held else None,
            "last_check": to_record(wait.last_check) if wait and wait.last_check else None,
            "overdue_seconds": round(self.overdue.total_seconds()) if self.overdue is not None else None,
            "error": self.state.error,
            **self.view.outlook.to_json(),
        }


def entry(view: RotationView, now: datetime) -> FleetEntry:
    wait = view.wait
    late = now - wait.next_check_at if wait is not None and not wait.held else None
    return FleetEntry(view, late if late is not None and late > OVERDUE else None)


def summary(entries: list[FleetEntry]) -> dict[str, Any]:
    """Counts per status, and the lists an operator acts on."""
    counts = Counter(item.status for item in entries)
    return {
        "users": len(entries),
        "counts": dict(sorted(counts.items())),
        "in_progress": sum(1 for item in entries if not item.state.phase.terminal),
        "needs_person": [item.user for item in entries if item.view.outlook.needs_person],
        "overdue": [item.user for item in entries if item.overdue is not None],
        "failed": {item.user: item.state.error for item in entries if item.state.phase is Phase.FAILED},
        "next_check_at": min(
            (item.view.wait.next_check_at for item in entries if item.view.wait and not item.view.wait.held),
            default=None,
        ),
    }


def gather(
    connections: Connections,
    only: tuple[str, ...] = (),
    now: datetime | None = None,
    accounts: list[str] | None = None,
) -> list[FleetEntry]:
    """Every user with a rotation record (matching the ``only`` globs, if any), in ``accounts`` (default: every
    account keyrotor has records for). Reads Vault only."""
    now = now or utcnow()
    found = []
    for account in accounts if accounts is not None else connections.accounts_with_records():
        found += _gather_account(connections, account, only, now)
    return found


def _gather_account(connections: Connections, account: str, only: tuple[str, ...], now: datetime) -> list[FleetEntry]:
    users = connections.users_with_records(account)
    if only:
        users = [user for user in users if any(fnmatch.fnmatch(user.lower(), glob.lower()) for glob in only)]
    found = []
    for user in users:
        try:
            view = read_view(connections.records(user, account), connections.waiting, account, user, now)
        except PreconditionFailed as error:  # one unreadable record hides no other rotation
            logging.getLogger("keyrotor.fleet").warning("%s: %s", user, error)
            continue
        if view.state is not None:
            found.append(entry(view, now))
    return found


def markdown(entries: list[FleetEntry], generated_at: datetime) -> str:
    """The fleet as the ``keyrotor-fleet`` artifact shows it."""
    totals = summary(entries)
    counts = ", ".join(f"{n} {status}" for status, n in totals["counts"].items()) or "no rotations recorded"
    lines = [
        f"### keyrotor fleet ({generated_at.isoformat(timespec='seconds')})",
        "",
        f"{totals['users']} users: {counts}. In progress: {totals['in_progress']}; "
        f"need a person: {len(totals['needs_person'])}.",
        "",
        "| account | user | status | waiting for | next |",
        "|---|---|---|---|---|",
    ]
    shown = [item for item in entries if not item.state.phase.terminal or item.view.outlook.needs_person]
    shown += [item for item in entries if item.state.phase is Phase.FAILED]
    for item in shown[:500]:
        lines.append(
            f"| {item.state.account_id} | {item.user} | {item.status} | {item.waiting_for} | `{item.view.outlook.command}` |"
        )
    if len(shown) > 500:
        lines.append(f"| ... | | {len(shown) - 500} more | | |")
    return "\n".join(lines)
