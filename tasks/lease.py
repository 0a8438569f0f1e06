"""The rotation lease: a record in Vault that says which run owns a user's rotation, renewed while it lives.

A second run while the owner is alive sees the lease renewed and refuses. A run started after the owner died
(killed, machine lost) sees the lease expire unrenewed and takes the rotation over, within one lease TTL.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger

from keyrotor.adapters.records import LeaseStore
from keyrotor.core.decisions import LeaseVerdict, judge_lease
from keyrotor.core.durations import format_duration
from keyrotor.core.errors import KeyrotorError, RotationConflict, VaultUnavailable
from keyrotor.core.timestamps import utcnow
from keyrotor.tasks.context import RotationContext


class Lease:
    """Acquire, renew in a background thread, and release one user's rotation lease."""

    def __init__(
        self,
        records: LeaseStore,
        *,
        holder: str,
        ttl: timedelta,
        flow_run_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._records = records
        self.owner = uuid.uuid4().hex
        self.holder = holder
        self.ttl = ttl
        self.flow_run_id = flow_run_id
        self._clock = clock
        self._sleep = sleep
        self._version = 0
        self._expires_at: datetime | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def _payload(self, now: datetime, acquired_at: str | None = None) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "holder": self.holder,
            "flow_run_id": self.flow_run_id,
            "acquired_at": acquired_at or now.isoformat(),
            "renewed_at": now.isoformat(),
            "expires_at": (now + self.ttl).isoformat(),
        }

    def acquire(self, busy_hint: str | None = None) -> None:
        """Take the lease, waiting at most one TTL for a silent owner; refuse as soon as the owner renews.

        With ``busy_hint`` (what the operator must do first), refuse at once, saying so, when the owner renewed the
        lease within its renewal period: it is alive, and waiting would only delay the same answer.
        """
        seen_renewal: str | None = None
        while True:
            record = self._records.read_lease()
            data, version = (record.data, record.version) if record else (None, 0)
            now = self._clock()
            if judge_lease(data, owner=self.owner, flow_run_id=self.flow_run_id, now=now) is LeaseVerdict.ACQUIRE:
                try:
                    self._version = self._write(self._payload(now), cas=version)
                except RotationConflict:
                    raise RotationConflict("another run claimed this rotation at the same moment; refusing") from None
                self._expires_at = now + self.ttl
                return
            assert data is not None
            alive = _holder_alive(data)
            renewed = seen_renewal is not None and data.get("renewed_at") != seen_renewal
            if busy_hint is not None and (alive or (alive is None and renewed)):
                raise RotationConflict(
                    f"a run is working on this user's rotation right now ({data.get('holder')}, flow run "
                    f"{data.get('flow_run_id')}, lease renewed at {data.get('renewed_at')}): {busy_hint}"
                )
            if seen_renewal is not None and data.get("renewed_at") != seen_renewal:
                raise RotationConflict(
                    f"a rotation of this user is already running ({data.get('holder')}, flow run "
                    f"{data.get('flow_run_id')}); its lease was renewed at {data.get('renewed_at')}. Refusing."
                )
            seen_renewal = data.get("renewed_at")
            remaining = (datetime.fromisoformat(data["expires_at"]) - now).total_seconds()
            self._sleep(max(0.05, min(remaining + 0.05, self.ttl.total_seconds() / 2)))

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired, in one attempt; False when a live owner holds it."""
        record = self._records.read_lease()
        data, version = (record.data, record.version) if record else (None, 0)
        now = self._clock()
        if judge_lease(data, owner=self.owner, flow_run_id=self.flow_run_id, now=now) is not LeaseVerdict.ACQUIRE:
            return False
        try:
            self._version = self._write(self._payload(now), cas=version)
        except RotationConflict:
            return False
        self._expires_at, self._lost = now + self.ttl, None
        return True

    def _write(self, payload: dict[str, Any], cas: int) -> int:
        """Write the lease; when check-and-set fails (or Vault stays unreachable) because this very write landed and
        its answer was lost, read it back and take it. Returns the version written."""
        try:
            return self._records.write_lease(payload, cas=cas).version
        except (RotationConflict, VaultUnavailable):
            try:
                current = self._records.read_lease()
            except KeyrotorError:
                current = None
            if current is not None and all(current.data.get(k) == payload[k] for k in ("owner", "renewed_at")):
                return current.version
            raise

    @property
    def lost(self) -> bool:
        """True once another owner took the lease over (or it expired unrenewed)."""
        return bool(self._lost) or self._expires_at is None or self._clock() >= self._expires_at

    def renew(self) -> None:
        """Extend the lease by one TTL; mark it lost if someone else took it."""
        now = self._clock()
        with self._write_lock:
            try:
                self._version = self._write(self._payload(now), cas=self._version)
            except RotationConflict:
                self._lost = "another run took over the rotation lease"
                return
            except KeyrotorError:
                return  # Vault trouble: keep trying until the lease would expire
            self._expires_at = now + self.ttl

    def assert_held(self) -> None:
        """Raise RotationConflict if the lease was lost or has expired (this run stalled too long).

        A lease that expired while Vault was unreachable (its renewals failed) is renewed here first: if nobody
        took it meanwhile, the check-and-set renewal succeeds and this run still holds it.
        """
        if not self._lost and self._expires_at is not None and self._clock() >= self._expires_at:
            self.renew()
        if self._lost:
            raise RotationConflict(self._lost)
        if self._expires_at is None or self._clock() >= self._expires_at:
            raise RotationConflict("this run's rotation lease expired; another run may take over")

    def _heartbeat(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            self.renew()
            if self._lost:
                return

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, name="keyrotor-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and hand the lease back (best effort: it expires anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost:
            return
        with self._write_lock, suppress(KeyrotorError):
            self._records.write_lease(
                {"owner": None, "released_at": self._clock().isoformat(), "last_holder": self.holder},
                cas=self._version,
            )


def _holder_alive(lease: dict[str, Any]) -> bool | None:
    """Whether the lease's holder still runs, when it ran on this machine (its pid is in the holder's name);
    None when that cannot be told from here (another machine: only a renewal shows it alive)."""
    found = re.search(r"@(\S+) pid (\d+)", str(lease.get("holder") or ""))
    if found is None or found.group(1) != socket.gethostname():
        return None
    try:
        os.kill(int(found.group(2)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lease(ctx: RotationContext, busy_hint: str | None = None) -> Lease:
    """Claim the user's rotation for this run (see :class:`Lease`); the run's log says so (no task of its own)."""
    lease = Lease(ctx.records, holder=ctx.actor, ttl=ctx.settings.lease_ttl, flow_run_id=ctx.flow_run_id)
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
