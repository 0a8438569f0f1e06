"""A lease in Vault: which process owns a user's rotation (or is the waker), renewed while it lives.

A second contender while the owner is alive sees the lease renewed and refuses (or, for the waker, stays a
spare). A contender that comes after the owner died (killed, machine lost) sees the lease expire unrenewed and
takes it over, within one TTL. The clock and the sleep are injected, so the unit tests run a day's lease in
microseconds.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import RetryCallState, Retrying, retry_if_result, stop_never

from keyrotor.adapters.records import LeaseStore, StoredLease
from keyrotor.core.decisions import LeaseVerdict, judge_lease
from keyrotor.core.errors import KeyrotorError, RotationConflict, VaultUnavailable
from keyrotor.core.model import LeaseData
from keyrotor.core.timestamps import utcnow


@dataclass(frozen=True)
class Holder:
    """Who takes a lease: a name for people, and where it runs (so a process on the same machine can tell when
    the holder died)."""

    name: str
    host: str
    pid: int

    @classmethod
    def this_process(cls, name: str) -> Holder:
        return cls(name, socket.gethostname(), os.getpid())


class Lease:
    """Acquire, renew in a background thread, and release one lease."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        holder: Holder,
        ttl: timedelta,
        flow_run_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        alive: Callable[[LeaseData], bool | None] | None = None,
    ) -> None:
        self._store = store
        self.owner = uuid.uuid4().hex
        self.holder = holder
        self.ttl = ttl
        self.flow_run_id = flow_run_id
        self._clock = clock
        self._sleep = sleep
        self._alive = alive or holder_alive
        self._version = 0
        self._expires_at: datetime | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def _data(self, now: datetime, acquired_at: datetime | None = None) -> LeaseData:
        return LeaseData(
            owner=self.owner,
            holder=self.holder.name,
            host=self.holder.host,
            pid=self.holder.pid,
            flow_run_id=self.flow_run_id,
            acquired_at=acquired_at or now,
            renewed_at=now,
            expires_at=now + self.ttl,
        )

    def acquire(self, busy_hint: str | None = None) -> None:
        """Take the lease, waiting at most one TTL for a silent owner; refuse as soon as the owner renews.

        With ``busy_hint`` (what the operator must do first), refuse at once, saying so, when the owner is known to
        be alive or renewed the lease within its renewal period: waiting would only delay the same answer.
        """
        seen: list[datetime | None] = []

        def attempt() -> float | None:
            """None once taken; else how long to wait before looking again."""
            current = self._store.read_lease()
            now = self._clock()
            if self._verdict(current, now) is LeaseVerdict.ACQUIRE:
                try:
                    self._version = self._write(self._data(now), cas=current.version if current else 0)
                except RotationConflict:
                    raise RotationConflict("another run claimed this rotation at the same moment; refusing") from None
                self._expires_at = now + self.ttl
                return None
            assert current is not None
            data = current.data
            renewed = bool(seen) and data.renewed_at != seen[-1]
            alive = self._alive(data)
            if busy_hint is not None and (alive or (alive is None and renewed)):
                raise RotationConflict(
                    f"a run is working on this user's rotation right now ({data.holder}, flow run "
                    f"{data.flow_run_id}, lease renewed at {_at(data.renewed_at)}): {busy_hint}"
                )
            if renewed:
                raise RotationConflict(
                    f"a rotation of this user is already running ({data.holder}, flow run {data.flow_run_id}); "
                    f"its lease was renewed at {_at(data.renewed_at)}. Refusing."
                )
            seen.append(data.renewed_at)
            remaining = (data.expires_at - now).total_seconds() if data.expires_at else 0.0
            return max(0.05, min(remaining + 0.05, self.ttl.total_seconds() / 2))

        Retrying(retry=retry_if_result(_is_wait), wait=_waited_for, stop=stop_never, sleep=self._sleep)(attempt)

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired, in one attempt; False when a live owner holds it."""
        current = self._store.read_lease()
        now = self._clock()
        if self._verdict(current, now) is not LeaseVerdict.ACQUIRE:
            return False
        try:
            self._version = self._write(self._data(now), cas=current.version if current else 0)
        except RotationConflict:
            return False
        self._expires_at, self._lost = now + self.ttl, None
        return True

    def _verdict(self, current: StoredLease | None, now: datetime) -> LeaseVerdict:
        data = current.data if current else None
        verdict = judge_lease(data, owner=self.owner, flow_run_id=self.flow_run_id, now=now)
        if verdict is LeaseVerdict.WAIT and data is not None and self._alive(data) is False:
            return LeaseVerdict.ACQUIRE  # its holder ran on this machine and is gone: no need to wait for the TTL
        return verdict

    def _write(self, lease: LeaseData, cas: int) -> int:
        """Write the lease; when check-and-set fails (or Vault stays unreachable) because this very write landed and
        its answer was lost, read it back and take it. Returns the version written."""
        try:
            return self._store.write_lease(lease, cas=cas)
        except (RotationConflict, VaultUnavailable):
            try:
                current = self._store.read_lease()
            except KeyrotorError:
                current = None
            if current is not None and (current.data.owner, current.data.renewed_at) == (lease.owner, lease.renewed_at):
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
                self._version = self._write(self._data(now), cas=self._version)
            except RotationConflict:
                self._lost = "another run took over the lease"
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
            raise RotationConflict("this run's lease expired; another run may take over")

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
        released = LeaseData(owner=None, released_at=self._clock(), last_holder=self.holder.name)
        with self._write_lock, suppress(KeyrotorError):
            self._store.write_lease(released, cas=self._version)


def _is_wait(outcome: float | None) -> bool:
    return outcome is not None


def _waited_for(retry_state: RetryCallState) -> float:
    """How long the last attempt said to wait (the owner's remaining TTL, bounded)."""
    outcome = retry_state.outcome.result() if retry_state.outcome is not None else None
    return float(outcome or 0.0)


def holder_alive(lease: LeaseData) -> bool | None:
    """Whether the lease's holder still runs, when it ran on this machine; None when that cannot be told from here
    (another machine, or a lease that does not say: only a renewal shows it alive)."""
    if lease.host != socket.gethostname() or lease.pid is None:
        return None
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _at(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "?"
