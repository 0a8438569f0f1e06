"""Holding a user's rotation lease for the length of a run (see :class:`keyrotor.adapters.lease.Lease`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger

from keyrotor.adapters.lease import Holder, Lease
from keyrotor.core.durations import format_duration
from keyrotor.tasks.context import RotationContext


def acquire_lease(ctx: RotationContext, busy_hint: str | None = None) -> Lease:
    """Claim the user's rotation for this run; the run's log says so (no task of its own)."""
    lease = Lease(
        ctx.records.lease,
        holder=Holder.this_process(ctx.actor),
        ttl=ctx.settings.lease_ttl,
        flow_run_id=ctx.flow_run_id,
    )
    lease.acquire(busy_hint)
    get_run_logger().info(
        "Holding the rotation lease of %r (renewed every %s)", ctx.user_name, format_duration(lease.ttl / 3)
    )
    return lease


@contextmanager
def rotation_lease(ctx: RotationContext, busy_hint: str | None = None) -> Iterator[RotationContext]:
    """Hold the user's rotation lease for the duration of the block; yields a context bound to it.

    ``busy_hint``: refuse at once, with this advice, while a live run holds it (see :meth:`Lease.acquire`).
    """
    lease = acquire_lease(ctx, busy_hint)
    lease.start_heartbeat()
    try:
        yield ctx.holding(lease)
    finally:
        lease.release()
