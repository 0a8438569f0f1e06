"""``keyrotor consumers``: who uses a user's keys, from CloudTrail, before, during or without a rotation.

This is how an account is onboarded: find each key's consumers (host and program), move them to reading Vault,
then rotate. Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyrotor.adapters.cloudtrail import TrailGateway
from keyrotor.adapters.connections import Connections
from keyrotor.core.consumers import BLIND_SPOTS, KeyConsumers, Moving, moving
from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.model import AccessKey, LastUsed, RotationState, to_record
from keyrotor.core.timestamps import utcnow


@dataclass(frozen=True)
class KeyUse:
    """One key: its IAM status and last use, and its consumers in CloudTrail."""

    key: AccessKey
    last_used: LastUsed
    consumers: KeyConsumers

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key.key_id,
            "status": self.key.status.value,
            "last_used": to_record(self.last_used),
            **{k: v for k, v in self.consumers.to_json().items() if k not in ("key_id", "blind_spots")},
        }


@dataclass(frozen=True)
class UserConsumers:
    """What ``keyrotor consumers USER`` shows."""

    user: str
    account_id: str
    since: datetime
    keys: list[KeyUse]

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "account_id": self.account_id,
            "since": self.since.isoformat(),
            "keys": [key.to_json() for key in self.keys],
            "blind_spots": BLIND_SPOTS,
        }


def regions_for(configured: tuple[str, ...], last_used: LastUsed | None) -> tuple[str, ...]:
    """Where to look: the region the key was last used in, and the configured ones."""
    used_in = last_used.region if last_used else None
    return tuple(dict.fromkeys(r for r in (used_in, *configured) if r and r != "N/A"))


def user_consumers(
    connections: Connections, user_name: str, since: timedelta, key_id: str | None = None
) -> UserConsumers:
    """The consumers of each of the user's keys (or of ``key_id``, which must be one of them) over ``since``."""
    connections.iam.ensure_user(user_name)
    keys = connections.iam.list_keys(user_name)
    if key_id is not None:
        keys = [key for key in keys if key.key_id == key_id]
        if not keys:
            raise PreconditionFailed(f"{key_id} is not an access key of IAM user {user_name!r}")
    start = utcnow() - since
    uses = []
    for key in keys:
        last_used = connections.iam.last_used(key.key_id)
        regions = regions_for(connections.settings.trail_regions, last_used)
        uses.append(KeyUse(key, last_used, connections.trail.consumers(key.key_id, regions, start)))
    return UserConsumers(user_name, connections.account_id, start, uses)


#: How long before the publish the old key's consumers are looked for (an application calling less often than
#: this, and not since, is not named).
LOOKBACK = timedelta(hours=1)


@dataclass(frozen=True)
class RotationConsumers:
    """The consumers of a rotation's old and new keys since the publish, and who has moved."""

    old: KeyConsumers
    new: KeyConsumers | None
    moving: Moving

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old.to_json(),
            "new": self.new.to_json() if self.new else None,
            **self.moving.to_json(),
            "said": self.describe(),
        }

    def describe(self) -> str:
        return self.old.unavailable or self.moving.describe()


def rotation_consumers(
    trail: TrailGateway, configured: tuple[str, ...], state: RotationState, last_used: LastUsed | None = None
) -> RotationConsumers | None:
    """For a rotation that has published its new key: who used the old key since, and who has moved."""
    if state.old_key_id is None or state.published_at is None:
        return None
    regions = regions_for(configured, last_used or state.last_used)
    old = trail.consumers(state.old_key_id, regions, state.published_at - LOOKBACK)
    new = trail.consumers(state.new_key_id, regions, state.published_at) if state.new_key_id else None
    return RotationConsumers(old, new, moving(old, new, state.published_at))
