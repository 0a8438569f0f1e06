"""Start retiring one key without creating another: the remedy for two active keys and for an unused key."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prefect import get_run_logger

from keyrotor.core.errors import PreconditionFailed
from keyrotor.core.inputs import RetirementRequest
from keyrotor.core.model import Phase, RotationKind, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.preflight import continue_recorded


@step("start-retirement")
def start_retirement(ctx: RotationContext, request: RetirementRequest) -> RotationState:
    """Record the retirement of the request's key (keeping ``keep_key_id``), or continue the one in progress.

    Checked live first, changing nothing when it fails: the key exists and is Active, the key kept (if any) is
    Active, Vault does not name the key to retire, and with ``min_idle_days`` the key is still unused for that long.
    The quiet period starts now: the key is deactivated once it has gone unused that long.
    """
    timings = request.timings
    recorded = continue_recorded(ctx, ctx.records.load_state(), timings)
    if recorded is not None:
        return recorded
    key_id, keep_key_id = request.key_id, request.keep_key_id or None
    min_idle = timedelta(days=request.min_idle_days) if request.min_idle_days else None
    keys = {key.key_id: key for key in ctx.iam.list_keys(ctx.user_name)}
    key = keys.get(key_id)
    if key is None or not key.active:
        raise PreconditionFailed(f"key {key_id} of {ctx.user_name!r} is not an active key any more; nothing to retire")
    if keep_key_id is not None and not (keys.get(keep_key_id) and keys[keep_key_id].active):
        raise PreconditionFailed(f"the key to keep, {keep_key_id}, is not active; not retiring {key_id}")
    published = ctx.records.published()
    if published is not None and published.key_id == key_id:
        raise PreconditionFailed(
            f"Vault's {ctx.records.paths.secret} names {key_id}: applications read it; not retiring it"
        )
    now = utcnow()
    if min_idle is not None:
        used = ctx.iam.last_used(key_id)
        idle_since = used.used_at or key.created
        if now - idle_since < min_idle:
            raise PreconditionFailed(f"key {key_id} is no longer unused: {used.describe()}; not deactivating it")
    state = RotationState(
        rotation_id=uuid.uuid4().hex[:12],
        user_name=ctx.user_name,
        account_id=ctx.account_id,
        phase=Phase.PUBLISHED,
        kind=RotationKind.RETIREMENT,
        timings=timings,
        started_at=now,
        started_by=ctx.actor,
        old_key_id=key_id,
        new_key_id=keep_key_id,
        keys_before=tuple(keys),
        flow_run_id=ctx.flow_run_id,
        published_at=now,
        wait_deadline=now + timings.max_wait,
        version=ctx.records.kv.current_version(ctx.records.paths.state),
    )
    get_run_logger().info("Retiring key %s of %r (keeping %s)", key_id, ctx.user_name, keep_key_id or "no other key")
    return ctx.save(state)
