"""``keyrotor status``: a read-only look at one user's keys, Vault record and rotation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyrotor.adapters.connections import Connections
from keyrotor.core.outlook import outlook
from keyrotor.core.timestamps import utcnow


def user_status(connections: Connections, user_name: str) -> dict[str, Any]:
    """Gather phase, keys with last-used evidence, the published key and the lease, without changing anything."""
    connections.iam.ensure_user(user_name)
    records = connections.records(user_name)
    state = records.load_state()
    published = records.published()
    lease_record = records.read_lease()
    now = utcnow()
    keys = []
    for key in connections.iam.list_keys(user_name):
        used = connections.iam.last_used(key.key_id)
        keys.append(
            {
                "key_id": key.key_id,
                "status": key.status.value,
                "created": key.created.isoformat(),
                "last_used": used.to_record(),
                "published_in_vault": published is not None and published.key_id == key.key_id,
                "role": _role(key.key_id, state.old_key_id if state else None, state.new_key_id if state else None),
            }
        )
    lease = lease_record.data if lease_record else {}
    alive = bool(lease.get("owner")) and datetime.fromisoformat(lease["expires_at"]) > now
    parked = connections.waiting.read(connections.account_id, user_name)
    waiting = parked if parked is not None and state is not None and parked.rotation_id == state.rotation_id else None
    next_check = waiting.next_check_at if waiting is not None and not waiting.held else None
    view = outlook(state, user_name, now, run_alive=alive, next_check_at=next_check)
    return {
        "user": user_name,
        "account_id": connections.account_id,
        "secret_path": f"{connections.kv.mount}/{records.paths.secret}",
        "published_key_id": published.key_id if published else None,
        "published_version": published.version if published else None,
        "keys": keys,
        "rotation": state.to_record() | {"version": state.version} if state else None,
        "lease": {
            "holder": lease.get("holder"),
            "flow_run_id": lease.get("flow_run_id"),
            "expires_at": lease.get("expires_at"),
        }
        if lease.get("owner")
        else None,
        "outlook": view.to_json(),
        "waiting": waiting.to_record() if waiting is not None else None,
        "checked_at": now.isoformat(),
    }


def _role(key_id: str, old_key_id: str | None, new_key_id: str | None) -> str:
    if key_id == old_key_id:
        return "old"
    if key_id == new_key_id:
        return "new"
    return ""
