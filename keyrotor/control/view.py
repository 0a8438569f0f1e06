"""One view of a rotation, rendered from its records, whoever shows it.

``keyrotor status``, ``keyrotor fleet-status`` and the rotation's artifact in the Prefect UI all read the same three
records (the rotation's state, its waiting record, its lease) and render them with
:func:`keyrotor.core.outlook.outlook`, so at any moment they say the same thing. Whoever changes a record (the run,
the waker, pause, resume, approval, rollback, deletion, the hourly sweep) publishes the artifact again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from keyrotor.adapters.prefect_runs import RunControl
from keyrotor.adapters.records import RotationRecords, WaitingIndex
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.model import LeaseData, RotationState, Wait
from keyrotor.core.outlook import Outlook, outlook, rotation_markdown

log = logging.getLogger("keyrotor.view")


@dataclass(frozen=True)
class RotationView:
    """A user's rotation as an operator sees it, and the records it was rendered from."""

    user: str
    account_id: str
    state: RotationState | None
    wait: Wait | None
    lease: LeaseData | None
    run_alive: bool
    outlook: Outlook

    def markdown(self) -> str:
        if self.state is None:
            return f"### `{self.user}` (account {self.account_id})\n\n- **doing**: {self.outlook.doing}"
        return rotation_markdown(self.state, self.outlook, self.wait)

    @property
    def artifact_key(self) -> str:
        return artifact_key(self.user, self.account_id)


def view_of(
    user: str,
    account_id: str,
    state: RotationState | None,
    wait: Wait | None,
    lease: LeaseData | None,
    now: datetime,
) -> RotationView:
    """Render the view from the records (pure)."""
    alive = bool(lease and lease.owner and lease.expires_at and lease.expires_at > now)
    parked = wait if wait is not None and state is not None and wait.rotation_id == state.rotation_id else None
    view = outlook(state, user, run_alive=alive, wait=parked)
    return RotationView(user, account_id, state, parked, lease, alive, view)


def read_view(
    records: RotationRecords, waiting: WaitingIndex, account_id: str, user: str, now: datetime
) -> RotationView:
    """Read the three records and render the view."""
    state = records.load_state()
    wait = waiting.read(account_id, user)
    lease = records.lease.read_lease()
    return view_of(user, account_id, state, wait, lease.data if lease else None, now)


def artifact_key(user_name: str, account_id: str) -> str:
    """``rotation-<account>-<user>-<hash>``: Prefect keys allow lowercase letters, digits and dashes only; the hash
    keeps two names that differ only in the characters replaced apart."""
    slug = re.sub(r"[^a-z0-9]+", "-", user_name.lower()).strip("-")[:40]
    digest = hashlib.sha256(f"{account_id}/{user_name}".encode()).hexdigest()[:6]
    return f"rotation-{account_id}-{slug}-{digest}"


def publish_view(runs: RunControl, view: RotationView) -> None:
    """Publish the view as the user's artifact (one key per user: the latest version is always at hand in the UI).
    Best effort: a rotation never fails because the UI could not be told about it."""
    if view.state is None:
        return
    description = f"{view.state.kind.value} of {view.user}: {view.outlook.status}"
    try:
        runs.publish_markdown(view.artifact_key, view.markdown(), description)
    except KeyrotorError as error:
        log.warning("Could not publish the artifact of %s: %s", view.user, error)
