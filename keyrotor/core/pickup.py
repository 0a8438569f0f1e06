"""Why a flow run was not started: nothing runs its deployment, or the work pool is full. Pure: no I/O.

``keyrotor rotate`` on a server asks when a run stays Scheduled, and says which of the two to fix: start a worker
(or ``keyrotor serve``), or raise the pool's limit (or wait for a slot: the run stays queued).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: A worker whose last heartbeat is older than this is not polling (Prefect's workers beat every 30 s).
WORKER_SILENT = timedelta(seconds=90)


@dataclass(frozen=True)
class Pickup:
    """What Prefect says about who could start a deployment's runs."""

    deployment: str
    pool: str | None  # None: a runner's deployment (`keyrotor serve`), no work pool
    limit: int | None = None  # the pool's concurrency limit (None: unlimited)
    busy: int = 0  # the pool's runs Pending or Running now
    workers: dict[str, datetime | None] = field(default_factory=dict)  # name -> last heartbeat
    last_polled: datetime | None = None  # a runner's last poll of the deployment

    def live_workers(self, now: datetime) -> list[str]:
        return sorted(name for name, beat in self.workers.items() if beat is not None and now - beat < WORKER_SILENT)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.busy >= self.limit


def why_not_started(pickup: Pickup, now: datetime) -> tuple[str, bool]:
    """What to tell the operator, and whether the run should stay queued (a full pool frees a slot eventually;
    with nothing polling, it never starts)."""
    if pickup.pool is None:
        polled = pickup.last_polled.isoformat(timespec="seconds") if pickup.last_polled else "never"
        return (
            f"no runner serves deployment {pickup.deployment} (last polled: {polled}): start `keyrotor serve`, or "
            "rotate in this process with --local",
            False,
        )
    live = pickup.live_workers(now)
    if not live:
        seen = ", ".join(
            f"{name} (last seen {beat.isoformat(timespec='seconds') if beat else 'never'})"
            for name, beat in sorted(pickup.workers.items())
        )
        return (
            f"no worker polls work pool {pickup.pool}{f' ({seen})' if seen else ''}: start one, "
            f"`prefect worker start --pool {pickup.pool}`, with keyrotor installed and its settings in its environment",
            False,
        )
    if pickup.full:
        return (
            f"work pool {pickup.pool} is full: {pickup.busy} of {pickup.limit} slots are taken by runs working now "
            f"(workers polling: {', '.join(live)}). The run stays queued and starts when a slot frees; raise the "
            f"limit (`prefect work-pool set-concurrency-limit {pickup.pool} N`) or add slots to go faster",
            True,
        )
    return (
        f"workers poll work pool {pickup.pool} ({', '.join(live)}) and it has free slots, but none started the run: "
        "look at the workers' logs (a worker for another pool type, or one that cannot import keyrotor)",
        False,
    )
