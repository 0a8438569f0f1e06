"""Records for the unit tests: a rotation in any phase, a parked wait, a lease, at a fixed time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from keyrotor.core.model import LastUsed, LeaseData, Look, Phase, Quiet, RotationState, Wait
from keyrotor.core.timings import Timings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMINGS = Timings(
    quiet_period=timedelta(seconds=60),
    poll_interval=timedelta(seconds=10),
    max_wait=timedelta(seconds=600),
    grace_period=timedelta(0),
)


def state(**changes: Any) -> RotationState:
    """A rotation of alice in account 123, started at T0, with ``changes``."""
    base = RotationState(
        rotation_id="r1",
        user_name="alice",
        account_id="123",
        phase=Phase.STARTED,
        timings=TIMINGS,
        started_at=T0,
        started_by="test",
    )
    return replace(base, **changes)


def parked(**changes: Any) -> Wait:
    """Alice's rotation r1, parked in flow run run-1 since T0, waiting on key K1, next look at T0 + 10 s."""
    base = Wait(
        rotation_id="r1",
        user_name="alice",
        account_id="123",
        flow_run_id="run-1",
        wait_id="wait-1",
        key_id="K1",
        since=T0,
        quiet_period=TIMINGS.quiet_period,
        poll_interval=TIMINGS.poll_interval,
        wait_deadline=T0 + TIMINGS.max_wait,
        next_check_at=T0 + TIMINGS.poll_interval,
        parked_at=T0,
        last_check=Look(T0, LastUsed("K1", None), Quiet.WAIT),
    )
    return replace(base, **changes)


def lease(owner: str | None, expires_in: float, run: str | None = "run-a") -> LeaseData:
    return LeaseData(owner=owner, flow_run_id=run, expires_at=T0 + timedelta(seconds=expires_in))
