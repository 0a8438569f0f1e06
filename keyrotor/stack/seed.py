"""Seed the local stack: IAM users with keys (back-dated when asked), their current key published in Vault."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from keyrotor.model import NewCredentials
from keyrotor.records import RotationRecords


def backdate_key(endpoint_url: str, key_id: str, created: datetime, last_used: datetime | None = None,
                 service: str = "s3", region: str = "us-east-1") -> None:
    """Set a key's CreateDate and last use through the local moto server's ``/_keyrotor/backdate`` control."""
    body = {"access_key_id": key_id, "created": created.isoformat(), "service": service, "region": region,
            "last_used": last_used.isoformat() if last_used else None}
    request = urllib.request.Request(
        f"{endpoint_url.rstrip('/')}/_keyrotor/backdate", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 204:
            raise RuntimeError(f"backdate of {key_id} failed: HTTP {response.status}")


def create_user_with_keys(iam: Any, records: RotationRecords, user_name: str, keys: int = 1,
                          publish: bool = True) -> list[str]:
    """Create ``user_name`` with ``keys`` active keys; publish the first to Vault as applications expect."""
    iam.create_user(UserName=user_name)
    created = [iam.create_access_key(UserName=user_name)["AccessKey"] for _ in range(keys)]
    if publish and created:
        first = created[0]
        records.publish(NewCredentials(first["AccessKeyId"], SecretStr(first["SecretAccessKey"])), cas=0)
    return [key["AccessKeyId"] for key in created]
