"""The waker's loop and its lease: any number of wakers may run (``keyrotor serve``'s thread, ``keyrotor waker``);
the one holding the waker lease in Vault works, the others wait to take over within one lease TTL."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from keyrotor.adapters.connections import Connections, whoami
from keyrotor.adapters.lease import Holder, Lease
from keyrotor.adapters.prefect_runs import PrefectRuns, RunControl, RunView
from keyrotor.adapters.records import LeaseRecord
from keyrotor.control import fleet_status
from keyrotor.control.view import publish_view, read_view
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.timestamps import utcnow
from keyrotor.deployments.table import PARKING
from keyrotor.waker.checks import DueChecks, Hooks, SweepReport
from keyrotor.waker.recovery import Recovery

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
FLEET_ARTIFACT = "keyrotor-fleet"
#: The fleet's artifact reads every user's records: refreshed at most this often (a user's own artifact follows
#: every change of that user).
FLEET_INTERVAL = timedelta(minutes=1)


class Waker:
    """Checks parked rotations when due and resumes those that can move on; every recovery interval, also fixes UI
    pauses, restarts dead runs and refreshes the fleet's artifact (see :mod:`keyrotor.waker`)."""

    def __init__(
        self,
        connections: Connections,
        runs: RunControl,
        *,
        clock: Callable[[], datetime] = utcnow,
        logger: Logger | None = None,
    ) -> None:
        self.connections = connections
        self.settings = connections.settings
        self.runs = runs
        self._clock = clock
        log = logger or logging.getLogger("keyrotor.waker")
        self.log = log if isinstance(log, logging.Logger) else log.logger
        self.actor = f"{whoami()}, waker"
        self._report: SweepReport | None = None
        self.checks = DueChecks(connections, runs, Hooks(self._changed, self._revive), self.actor, self.log)
        deployments = [deployment.full_name for deployment in PARKING]
        self.recovery = Recovery(connections, runs, deployments, self.checks.hold, self.log)
        self._last_recovery: datetime | None = None
        self._last_fleet: datetime | None = None
        self._fleet_shown = ""

    @property
    def recovery_interval(self) -> timedelta:
        """How often the waker looks for UI pauses and dead runs (each look reads Prefect and the leases)."""
        return max(self.settings.waker_interval * 6, timedelta(seconds=5))

    def sweep(self) -> SweepReport:
        """Check every due parked rotation once; every recovery interval, also recover."""
        report = SweepReport()
        now = self._clock()
        self.checks.sweep(now, report)
        if self._last_recovery is None or now - self._last_recovery >= self.recovery_interval:
            self._last_recovery = now
            try:
                self.recovery.fix_ui_pauses(now, report)
                self.recovery.restart_dead_runs(now, report)
                if self._last_fleet is None or now - self._last_fleet >= FLEET_INTERVAL:
                    self._last_fleet = now
                    self._publish_fleet(now)
            except KeyrotorError as error:
                self.log.warning("Recovery look skipped: %s", error)
            self.checks.forget()
        return report

    def _changed(self, account: str, user: str) -> None:
        """A record of this user changed: publish the user's view again (the artifact follows every change)."""
        records = self.connections.records(user, account)
        publish_view(self.runs, read_view(records, self.connections.waiting, account, user, self._clock()))

    def _revive(self, run: RunView, account: str, user: str, report: SweepReport) -> None:
        self.recovery.revive(run, account, user, report, self._clock())

    def _publish_fleet(self, now: datetime) -> None:
        """The ``keyrotor-fleet`` artifact in the Prefect UI, when the fleet changed since the last one."""
        entries = fleet_status.gather(self.connections, now=now)
        body = fleet_status.markdown(entries, now)
        unchanged = body.partition("\n")[2]
        if unchanged == self._fleet_shown:
            return
        self.runs.publish_markdown(FLEET_ARTIFACT, body, "keyrotor: every rotation")
        self._fleet_shown = unchanged


def waker_lease(connections: Connections, server: str, clock: Callable[[], datetime] = utcnow) -> Lease:
    """The lease that makes one waker the active one, per Prefect server. Its TTL is short
    (``KEYROTOR_WAKER_LEASE_TTL``), so a lost waker is replaced within it.

    Two Prefect servers may share one Vault (staging and production, say): each has its own waker, and each waker
    resumes only the runs that live on its server.
    """
    settings = connections.settings
    ttl = max(settings.waker_lease_ttl, settings.waker_interval * 3)
    path = settings.waker_lease_path + (f"-{hashlib.sha256(server.encode()).hexdigest()[:10]}" if server else "")
    holder = Holder.this_process(f"{whoami()}, waker of {server or 'a temporary server'}")
    return Lease(LeaseRecord(connections.kv, path), holder=holder, ttl=ttl, clock=clock)


def keep_waking(
    stop: threading.Event,
    connections: Connections | None = None,
    *,
    runs: RunControl | None = None,
    run_for: timedelta | None = None,
    leave_if_busy: bool = False,
    logger: Logger | None = None,
) -> None:
    """Be the waker until ``stop`` is set (or ``run_for`` passed): take the waker lease when it is free, sweep
    every waker interval while holding it, and hand it back at the end. A failed sweep (Vault, IAM or Prefect
    unreachable) is a missed look, tried again at the next interval.

    Args:
        stop: Set it to end the loop.
        connections: AWS and Vault (default: from the environment).
        runs: Prefect's runs (default: the server in PREFECT_API_URL).
        run_for: End after this long.
        leave_if_busy: End at once when another waker holds the lease.
        logger: Where to log.
    """
    connections = connections or Connections.from_settings()
    runs = runs or PrefectRuns()
    log = logger or logging.getLogger("keyrotor.waker")
    keep_crash_detection(log)
    waker = Waker(connections, runs, logger=log)
    lease: Lease | None = None
    interval = connections.settings.waker_interval.total_seconds()
    ends = time.monotonic() + run_for.total_seconds() if run_for is not None else None
    while not stop.is_set() and (ends is None or time.monotonic() < ends):
        try:
            if lease is None:
                candidate = waker_lease(connections, runs.server)
                if candidate.try_acquire():
                    candidate.start_heartbeat()  # renewed in its own thread, however long a sweep takes
                    lease = candidate
                    log.info("This process is the waker now (checks parked rotations every %gs)", interval)
                elif leave_if_busy:
                    log.info("Another waker is active; nothing to do here")
                    return
            elif lease.lost:
                lease.release()
                lease = None
                log.warning("Lost the waker lease; another waker took over")
                continue
            if lease is not None:
                waker.sweep()
        except KeyrotorError as error:
            log.warning("Waker sweep missed: %s", error)
        except Exception:  # noqa: BLE001 - a bug in one sweep must not end the waker; it is logged with its traceback
            log.exception("Waker sweep failed")
        stop.wait(interval)
    if lease is not None:
        lease.release()


def keep_crash_detection(log: Logger) -> None:
    """Make sure the server marks runs whose heartbeats stopped as Crashed (best effort: the leases find dead runs
    anyway, only later)."""
    from keyrotor.adapters.automations import crash_silent_runs, ensure

    try:
        ensure(crash_silent_runs())
    except KeyrotorError as error:
        log.warning("Could not keep the automation that crashes silent runs: %s", error)


def start_waker_thread(stop: threading.Event) -> threading.Thread:
    """Run :func:`keep_waking` in a daemon thread of this process (``keyrotor serve``)."""
    thread = threading.Thread(target=keep_waking, args=(stop,), name="keyrotor-waker", daemon=True)
    thread.start()
    return thread
