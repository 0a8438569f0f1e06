"""The fleet's progress at any time, from Vault's records alone: every user's rotation (or retirement), where it
stands, who waits on what and until when, who needs a person, who failed and why.

``keyrotor fleet-status`` prints it; the waker publishes it as the ``keyrotor-fleet`` artifact in the Prefect UI.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyrotor.adapters.connections import Connections
from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import Phase, RotationState, Wait
from keyrotor.core.outlook import Outlook, outlook
from keyrotor.core.timestamps import utcnow


@dataclass(frozen=True)
class FleetEntry:
    """One user's rotation as the fleet view shows it."""

    user: str
    status: str
    state: RotationState
    wait: Wait | None
    view: Outlook

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.state.account_id,
            "user": self.user,
            "status": self.status,
            "kind": self.state.kind,
            "rotation_id": self.state.rotation_id,
            "phase": self.state.phase.value,
            "old_key_id": self.state.old_key_id,
            "new_key_id": self.state.new_key_id,
            "next_check_at": self.wait.next_check_at.isoformat() if self.wait and not self.wait.held else None,
            "last_check": self.wait.last_check if self.wait else None,
            "error": self.state.error,
            **self.view.to_json(),
        }


def status_of(state: RotationState, wait: Wait | None) -> str:
    """A one-word status for counting: the phase, or what a rotation in phase ``published`` is doing."""
    if state.phase.terminal:
        return state.phase.value
    if state.rollback_started_at is not None:
        return "rolling back"
    if state.paused_run_id:
        return "awaiting approval" if "approval" in (state.pause_reason or "") else "paused"
    if state.halted:
        return "stopped at deadline"
    if state.phase is Phase.PUBLISHED:
        return "waiting" if wait is not None else "waiting (in a process)"
    if state.phase is Phase.DEACTIVATED:
        return "grace period"
    return state.phase.value


def entry(user: str, state: RotationState, wait: Wait | None, now: datetime) -> FleetEntry:
    parked = wait if wait is not None and wait.rotation_id == state.rotation_id else None
    next_check = parked.next_check_at if parked is not None and not parked.held else None
    return FleetEntry(
        user, status_of(state, parked), state, parked, outlook(state, user, now, next_check_at=next_check)
    )


def summary(entries: list[FleetEntry]) -> dict[str, Any]:
    """Counts per status, and the lists an operator acts on."""
    counts = Counter(item.status for item in entries)
    return {
        "users": len(entries),
        "counts": dict(sorted(counts.items())),
        "in_progress": sum(1 for item in entries if not item.state.phase.terminal),
        "needs_person": [item.user for item in entries if item.view.needs_person],
        "failed": {item.user: item.state.error for item in entries if item.state.phase is Phase.FAILED},
        "next_check_at": min(
            (item.wait.next_check_at for item in entries if item.wait is not None and not item.wait.held),
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
    waiting = connections.waiting
    parked = {user: waiting.read(account, user) for user in waiting.users(account)}
    found = []
    for user in users:
        try:
            state = connections.records(user, account).load_state()
        except PreconditionFailed as error:  # one unreadable record hides no other rotation
            logging.getLogger("keyrotor.remediation.survey").warning("%s: %s", user, error)
            continue
        if state is not None:
            found.append(entry(user, state, parked.get(user), now))
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
    shown = [item for item in entries if not item.state.phase.terminal or item.view.needs_person]
    shown += [item for item in entries if item.state.phase is Phase.FAILED]
    for item in shown[:500]:
        lines.append(
            f"| {item.state.account_id} | {item.user} | {item.status} | {item.view.waiting_for} | `{item.view.command}` |"
        )
    if len(shown) > 500:
        lines.append(f"| ... | | {len(shown) - 500} more | | |")
    return "\n".join(lines)
