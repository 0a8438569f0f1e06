"""``keyrotor status``: a read-only look at one user's keys, Vault record and rotation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyrotor.adapters.connections import Connections
from keyrotor.control.consumers import RotationConsumers, rotation_consumers
from keyrotor.control.view import RotationView, read_view
from keyrotor.core.model import AccessKey, LastUsed, Phase, to_record
from keyrotor.core.timestamps import utcnow


@dataclass(frozen=True)
class KeyStatusLine:
    """One of the user's keys: its IAM status, last use, and its part in the rotation and in Vault."""

    key: AccessKey
    last_used: LastUsed
    published: bool
    role: str  # "old", "new" or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key.key_id,
            "status": self.key.status.value,
            "created": self.key.created.isoformat(),
            "last_used": to_record(self.last_used),
            "published_in_vault": self.published,
            "role": self.role,
        }


@dataclass(frozen=True)
class UserStatus:
    """What ``keyrotor status`` shows."""

    user: str
    account_id: str
    secret_path: str
    published_key_id: str | None
    published_version: int | None
    keys: list[KeyStatusLine]
    view: RotationView
    checked_at: datetime
    consumers: RotationConsumers | None = None  # while both keys are active after the publish: who moved

    def to_json(self) -> dict[str, Any]:
        state, wait = self.view.state, self.view.wait
        return {
            "user": self.user,
            "account_id": self.account_id,
            "secret_path": self.secret_path,
            "published_key_id": self.published_key_id,
            "published_version": self.published_version,
            "keys": [line.to_json() for line in self.keys],
            "rotation": state.to_json() if state else None,
            "lease": self._lease(),
            "outlook": self.view.outlook.to_json(),
            "waiting": to_record(wait) if wait is not None else None,
            "consumers": self.consumers.to_json() if self.consumers else None,
            "checked_at": self.checked_at.isoformat(),
        }

    def _lease(self) -> dict[str, Any] | None:
        lease = self.view.lease
        if lease is None or not self.view.run_alive:
            return None
        expires = lease.expires_at.isoformat() if lease.expires_at else None
        return {"holder": lease.holder, "flow_run_id": lease.flow_run_id, "expires_at": expires}


def user_status(connections: Connections, user_name: str) -> UserStatus:
    """Gather the keys with last-used evidence, the published key and the rotation's view, changing nothing."""
    connections.iam.ensure_user(user_name)
    records = connections.records(user_name)
    now = utcnow()
    view = read_view(records, connections.waiting, connections.account_id, user_name, now)
    published = records.published()
    state = view.state
    roles = {state.old_key_id: "old", state.new_key_id: "new"} if state else {}
    keys = [
        KeyStatusLine(
            key,
            connections.iam.last_used(key.key_id),
            published is not None and published.key_id == key.key_id,
            roles.get(key.key_id, ""),
        )
        for key in connections.iam.list_keys(user_name)
    ]
    both_active = state is not None and state.phase in (Phase.PUBLISHED, Phase.REJECTED)
    consumers = (
        rotation_consumers(connections.trail, connections.settings.trail_regions, state)
        if state is not None and both_active
        else None
    )
    return UserStatus(
        consumers=consumers,
        user=user_name,
        account_id=connections.account_id,
        secret_path=f"{connections.kv.mount}/{records.paths.secret}",
        published_key_id=published.key_id if published else None,
        published_version=published.version if published else None,
        keys=keys,
        view=view,
        checked_at=now,
    )
