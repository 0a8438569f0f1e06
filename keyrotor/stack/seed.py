"""Seed the local stack: IAM users with keys (back-dated when asked), their current key published in Vault.

Many users at once (for the audit's tests and benchmark) go through the moto server's bulk control.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from keyrotor.adapters.records import RotationRecords
from keyrotor.core.model import NewCredentials


def backdate_key(
    endpoint_url: str,
    key_id: str,
    created: datetime,
    last_used: datetime | None = None,
    service: str = "s3",
    region: str = "us-east-1",
) -> None:
    """Set a key's CreateDate and last use through the local moto server's ``/_keyrotor/backdate`` control."""
    body = {
        "access_key_id": key_id,
        "created": created.isoformat(),
        "service": service,
        "region": region,
        "last_used": last_used.isoformat() if last_used else None,
    }
    status, _ = _post_control(endpoint_url, "backdate", body, timeout=10)
    if status != 204:
        raise RuntimeError(f"backdate of {key_id} failed: HTTP {status}")


@dataclass(frozen=True)
class SeedKey:
    """An access key to seed, back-dated.

    Attributes:
        created: Its CreateDate.
        last_used: When it last signed a request; None for never.
        active: Active or Inactive.
        service: The service of its last use.
    """

    created: datetime
    last_used: datetime | None = None
    active: bool = True
    service: str = "s3"

    def to_json(self) -> dict[str, Any]:
        """The key as the ``/_keyrotor/seed`` control reads it."""
        return {
            "status": "Active" if self.active else "Inactive",
            "created": self.created.isoformat(),
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "service": self.service,
        }


@dataclass(frozen=True)
class SeedUser:
    """An IAM user to seed, with its tags and keys (at most two, as IAM allows)."""

    name: str
    keys: tuple[SeedKey, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The user as the ``/_keyrotor/seed`` control reads it."""
        return {"name": self.name, "tags": self.tags, "keys": [key.to_json() for key in self.keys]}


def seed_users(
    endpoint_url: str, users: Sequence[SeedUser], batch: int = 2000, account_id: str | None = None
) -> dict[str, list[str]]:
    """Create many users with tags and back-dated keys through the local moto server's ``/_keyrotor/seed``.

    Args:
        endpoint_url: The local moto server's URL.
        users: The users to create; none may exist yet.
        batch: Users per request.
        account_id: The moto account to create them in (default: moto's own).

    Returns:
        Each user's new access key ids, in the order of its keys.
    """
    created: dict[str, list[str]] = {}
    for start in range(0, len(users), batch):
        body: dict[str, Any] = {"users": [user.to_json() for user in users[start : start + batch]]}
        if account_id:
            body["account_id"] = account_id
        _, answer = _post_control(endpoint_url, "seed", body, timeout=120)
        created.update(json.loads(answer)["users"])
    return created


def _post_control(endpoint_url: str, control: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    """POST JSON to one of the local moto wrapper's ``/_keyrotor/<control>`` endpoints; its status and body."""
    request = urllib.request.Request(
        f"{endpoint_url.rstrip('/')}/_keyrotor/{control}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def create_user_with_keys(
    iam: Any, records: RotationRecords, user_name: str, keys: int = 1, publish: bool = True
) -> list[str]:
    """Create ``user_name`` with ``keys`` active keys; publish the first to Vault as applications expect."""
    iam.create_user(UserName=user_name)
    created = [iam.create_access_key(UserName=user_name)["AccessKey"] for _ in range(keys)]
    if publish and created:
        first = created[0]
        records.publish(NewCredentials(first["AccessKeyId"], SecretStr(first["SecretAccessKey"])), cas=0)
    return [key["AccessKeyId"] for key in created]


def refuse_assume_role(endpoint_url: str, account_ids: Sequence[str]) -> None:
    """Make AssumeRole into these accounts fail with AccessDenied on the local moto (an SCP, a missing role)."""
    status, _ = _post_control(endpoint_url, "refuse-assume-role", {"account_ids": list(account_ids)}, timeout=10)
    if status != 204:
        raise RuntimeError(f"refuse-assume-role failed: HTTP {status}")
