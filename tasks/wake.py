"""The waker: one loop, in one process, for every parked rotation.

It lists Vault's waiting index, and for each rotation whose check is due it reads the old key's last use (one IAM
call) and decides with the same pure rule a run uses (:func:`keyrotor.core.decisions.check_quiet`). Still in use: it records
the look and when the next one is due. Quiet, or at the deadline: it resumes the rotation's suspended flow run,
which starts again from the top and moves on. A wait therefore costs one IAM call per poll interval, and no process.

It also keeps the promises a suspended run cannot keep itself:

* a pause from the Prefect UI (Suspended with a timeout, which Prefect turns into Failed when it passes) is made
  to never expire, and recorded in Vault as an operator's hold; one that already failed is suspended again;
* a run whose process died with its runner or worker (still Running or Pending in Prefect, its lease expired)
  is scheduled again, so another runner finishes it.

Only one waker works at a time: it holds the waker lease in Vault, so any number of ``keyrotor serve`` processes
or ``wake-rotations`` runs can offer to wake, and another takes over within a lease TTL when one dies.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType
from prefect.states import Scheduled

from keyrotor.adapters.connections import Connections, whoami
from keyrotor.adapters.prefect_api import (
    WAITING,
    deployment_ids,
    force_state,
    prefect_call,
    read_run,
    resume_run,
    runs_of,
    this_server,
)
from keyrotor.adapters.records import LeaseRecord, hold_rotation
from keyrotor.core.decisions import Quiet, check_quiet
from keyrotor.core.errors import KeyrotorError, RotationConflict
from keyrotor.core.model import Wait
from keyrotor.core.timestamps import utcnow
from keyrotor.deployments.table import RETIRE, ROTATE
from keyrotor.tasks.lease import Lease

EXPIRED_PAUSE = "The flow was paused and never resumed"
#: A run that never took its user's lease is presumed dead only after this long (it may still be starting).
NO_LEASE_GRACE = timedelta(seconds=30)
#: A run that keeps dying is scheduled again at most this many times; after that it is left for a person.
MAX_REVIVALS = 3
#: The deployments whose runs park and can be paused.
PARKING_DEPLOYMENTS = (ROTATE.full_name, RETIRE.full_name)

Key = tuple[str, str]  # (account id, user name)


@dataclass
class SweepReport:
    """What one sweep did, for logs and tests."""

    checked: int = 0
    woken: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    next_due: datetime | None = None


class Waker:
    """Checks parked rotations when due and resumes those that can move on (see the module docstring)."""

    def __init__(
        self,
        connections: Connections,
        *,
        clock: Callable[[], datetime] = utcnow,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.connections = connections
        self.settings = connections.settings
        self._clock = clock
        self.log = logger or logging.getLogger("keyrotor.waker")
        self._cache: dict[Key, Wait] = {}
        self._resumed: dict[Key, tuple[str, datetime]] = {}  # wait ids resumed, until their runs park again or end
        self._last_recovery: datetime | None = None
        self._deployments: dict[str, Any] = {}
        self._fleet_shown = ""
        self._revived: dict[str, int] = {}
        self.server = this_server()

    # --- one sweep ----------------------------------------------------------------------------------------------
    def sweep(self) -> SweepReport:
        """Check every due parked rotation once; every few sweeps, also fix UI pauses and recover dead runs."""
        report = SweepReport()
        now = self._clock()
        self._refresh(now)
        for key, wait in sorted(self._cache.items(), key=lambda item: item[1].next_check_at):
            if wait.held or wait.next_check_at > now:
                continue
            report.checked += 1
            self._check(key, wait, now, report)
        if self._last_recovery is None or now - self._last_recovery >= self.recovery_interval:
            self._last_recovery = now
            self._recover(now, report)
            self._cache.clear()  # read every record afresh at the next sweep: nothing stays stale for long
        due = [wait.next_check_at for wait in self._cache.values() if not wait.held]
        report.next_due = min(due) if due else None
        return report

    @property
    def recovery_interval(self) -> timedelta:
        """How often the waker looks for UI pauses and dead runs (each look reads Prefect and every record)."""
        return max(self.settings.waker_interval * 10, self.settings.lease_ttl)

    def _refresh(self, now: datetime) -> None:
        """List the waiting index; read what is new, and what was resumed until its run parks again or ends."""
        index = self.connections.waiting
        listed = {(account, user) for account in index.accounts() for user in index.users(account)}
        for key in set(self._cache) - listed:
            del self._cache[key]
        for key in set(self._resumed) - listed:
            del self._resumed[key]
        for key in listed:
            resumed = self._resumed.get(key)
            cached = self._cache.get(key)
            if cached is not None and resumed is None and not cached.held:
                continue  # held ones are read again each sweep: a resume or a new park replaces them
            wait = index.read(*key)
            if wait is None:
                continue
            if wait.prefect_api and wait.prefect_api != self.server:
                self._cache[key] = wait.evolve(held=True)  # another Prefect server's run: its wakers' business
                continue
            if resumed is not None:
                wait_id, at = resumed
                if wait.wait_id == wait_id and now - at < timedelta(minutes=5):
                    continue  # the resumed run has not parked again (or ended) yet
                del self._resumed[key]
            self._cache[key] = wait

    def _check(self, key: Key, wait: Wait, now: datetime, report: SweepReport) -> None:
        fresh = self.connections.waiting.read(*key)  # it may have changed since it was listed
        if fresh is None or fresh.wait_id != wait.wait_id or fresh.held or fresh.next_check_at > now:
            if fresh is None:
                self._cache.pop(key, None)
            else:
                self._cache[key] = fresh
            return
        try:
            used = self.connections.for_account(wait.account_id, "waker").iam.last_used(wait.old_key_id)
        except KeyrotorError as error:  # a missed look, not a failure: try again after a poll interval
            self.log.warning("Could not read the last use of %s (%s): %s", wait.old_key_id, wait.user_name, error)
            self._cache[key] = fresh.evolve(next_check_at=now + timedelta(seconds=fresh.poll_interval))
            return
        decision = check_quiet(
            published_at=fresh.published_at,
            last_used=used,
            quiet_period=timedelta(seconds=fresh.quiet_period),
            poll_interval=timedelta(seconds=fresh.poll_interval),
            deadline=fresh.wait_deadline,
            now=now,
        )
        look = {"at": now.isoformat(), "last_used": used.to_record(), "outcome": decision.outcome.value}
        if decision.outcome is Quiet.WAIT:
            assert decision.next_check_at is not None
            try:
                self._cache[key] = self.connections.waiting.write(
                    fresh.evolve(next_check_at=decision.next_check_at, last_check=look)
                )
            except RotationConflict:
                self._cache.pop(key, None)  # the rotation wrote a newer record: read it next sweep
            return
        if self._resume(fresh, report):
            self._resumed[key] = (fresh.wait_id, now)
            self._cache.pop(key, None)
            self.log.info(
                "Woke %s of %r (flow run %s): old key %s %s",
                fresh.rotation_id,
                fresh.user_name,
                fresh.flow_run_id,
                fresh.old_key_id,
                "quiet" if decision.outcome is Quiet.QUIET else "still in use at the deadline",
            )

    def _resume(self, wait: Wait, report: SweepReport) -> bool:
        """Resume the parked run; True when it is on its way (resumed now, or already)."""
        try:
            run = read_run(wait.flow_run_id)
        except KeyrotorError as error:
            self.log.warning("Cannot read flow run %s of %r: %s", wait.flow_run_id, wait.user_name, error)
            return False
        if run is None or run.state is None:
            self.log.error(
                "Flow run %s of %r's rotation is gone from Prefect; `keyrotor rotate %s` continues the rotation",
                wait.flow_run_id,
                wait.user_name,
                wait.user_name,
            )
            self._cache[(wait.account_id, wait.user_name)] = wait.evolve(held=True)  # do not log it every sweep
            return False
        state = run.state
        if state.is_paused() and state.name == WAITING:
            try:
                resume_run(str(run.id))
            except KeyrotorError as error:
                self.log.warning("Could not resume flow run %s of %r: %s", run.id, wait.user_name, error)
                return False
            except RuntimeError:  # NotPausedError: it was resumed (or paused by someone) meanwhile
                return True
            report.woken.append(wait.user_name)
            return True
        if state.is_paused():  # an operator paused it; the index did not know yet
            self._hold(wait.account_id, wait.user_name, str(run.id), "suspended from Prefect")
            report.held.append(wait.user_name)
            return False
        if state.is_scheduled() or state.is_pending() or state.is_running():
            return True  # resumed by someone else (the UI's Resume)
        if state.is_cancelled() or state.is_cancelling():
            self.log.warning("Flow run %s of %r was cancelled while it waited; leaving it", run.id, wait.user_name)
            self._hold(wait.account_id, wait.user_name, str(run.id), "its flow run was cancelled")
            return False
        if state.is_crashed():  # its process died after it was resumed: run it again
            self._revive(run, wait.account_id, wait.user_name, report)
            return True
        # Completed or failed: it moved on and the record stayed behind (an interrupted clean-up)
        self.log.info("Dropping the stale waiting record of %r (flow run %s is %s)", wait.user_name, run.id, state.name)
        self.connections.waiting.remove(wait.account_id, wait.user_name, wait.wait_id)
        return False

    # --- recovery -----------------------------------------------------------------------------------------------
    def _recover(self, now: datetime, report: SweepReport) -> None:
        try:
            self._fix_ui_pauses(report)
            self._restart_dead_runs(now, report)
            self._publish_fleet(now)
        except KeyrotorError as error:
            self.log.warning("Recovery look skipped: %s", error)

    def _publish_fleet(self, now: datetime) -> None:
        """The ``keyrotor-fleet`` artifact in the Prefect UI, when the fleet changed since the last one."""
        from prefect.artifacts import create_markdown_artifact

        from keyrotor.control import fleet_status

        entries = fleet_status.gather(self.connections, now=now)
        body = fleet_status.markdown(entries, now)
        if body.partition("\n")[2] == self._fleet_shown:
            return
        with prefect_call("publish the fleet artifact"):
            create_markdown_artifact(key="keyrotor-fleet", markdown=body, description="keyrotor: every rotation")
        self._fleet_shown = body.partition("\n")[2]

    def _parking_deployments(self) -> list[Any]:
        if len(self._deployments) < len(PARKING_DEPLOYMENTS):
            self._deployments = deployment_ids(list(PARKING_DEPLOYMENTS))
        return list(self._deployments.values())

    def _fix_ui_pauses(self, report: SweepReport) -> None:
        """Make UI pauses never expire (and revive those that did), recording each as an operator's hold."""
        deployments = self._parking_deployments()
        for run in runs_of(deployments, [StateType.PAUSED]):
            if run.state is None or run.state.state_details.pause_timeout is None or run.state.name == WAITING:
                continue
            details = run.state.state_details.model_copy(update={"pause_timeout": None})
            force_state(str(run.id), State(type=StateType.PAUSED, name=run.state.name, state_details=details))
            self._hold_run(run, "suspended from Prefect", report)
            self.log.info(
                "Flow run %s (%s) was paused from the UI: it now waits for Resume, with no timeout", run.id, run.name
            )
        for run in runs_of(deployments, [StateType.FAILED], limit=50):
            if run.state is None or EXPIRED_PAUSE not in (run.state.message or ""):
                continue
            user, account = self._whose(run)
            state = self.connections.records(user, account).load_state() if user else None
            if state is None or state.phase.terminal or str(run.id) not in state.run_ids():
                continue
            details = StateDetails(pause_reschedule=True, pause_timeout=None)
            force_state(str(run.id), State(type=StateType.PAUSED, name="Suspended", state_details=details))
            self._hold_run(run, "suspended from Prefect (its pause had expired)", report)
            self.log.info("Flow run %s (%s) failed when its pause expired: paused again, resumable", run.id, run.name)

    def _restart_dead_runs(self, now: datetime, report: SweepReport) -> None:
        """Schedule again the rotation runs whose process died mid-work with its runner or worker: still Running or
        Pending in Prefect (or Crashed), their user's lease expired or never taken. Another runner finishes them."""
        stale = self.settings.lease_ttl * 2
        never_leased = max(stale, NO_LEASE_GRACE)
        dead = [StateType.RUNNING, StateType.PENDING, StateType.CRASHED]
        for run in runs_of(self._parking_deployments(), dead):
            if run.state is None or run.state.timestamp is None or now - run.state.timestamp < stale:
                continue
            user, account = self._whose(run)
            if not user or self._revived.get(str(run.id), 0) >= MAX_REVIVALS:
                continue
            lease = self.connections.records(user, account).read_lease()
            data = lease.data if lease else {}
            if data.get("owner") and data.get("flow_run_id") != str(run.id):
                continue  # another run works on this user now; this one is a leftover it will not need
            seen = [datetime.fromisoformat(data[name]) for name in ("expires_at", "released_at") if data.get(name)]
            if seen and max(seen) > now - stale:
                continue  # a run holds the lease, or let it go moments ago
            if not seen and now - run.state.timestamp < never_leased:
                continue  # it may still be starting up
            state = self.connections.records(user, account).load_state()
            if state is not None and state.phase.terminal and str(run.id) in state.run_ids():
                continue  # it finished its work and died reporting it
            self._revived[str(run.id)] = self._revived.get(str(run.id), 0) + 1
            self._revive(run, account, user, report)

    def _revive(self, run: FlowRun, account: str, user: str, report: SweepReport) -> None:
        force_state(str(run.id), Scheduled(name="Recovering", scheduled_time=self._clock()))
        report.recovered.append(user)
        self.log.warning(
            "Flow run %s (%s) of %r was %s with nobody running it: scheduled again",
            run.id,
            run.name,
            user,
            run.state.name if run.state else "?",
        )

    def _hold_run(self, run: FlowRun, reason: str, report: SweepReport) -> None:
        user, account = self._whose(run)
        if user:
            self._hold(account, user, str(run.id), reason)
            report.held.append(user)

    def _hold(self, account: str, user: str, run_id: str, reason: str) -> None:
        records = self.connections.records(user, account)
        hold_rotation(records, self.connections.waiting, account, user, run_id, reason, self.actor)
        key = (account, user)
        if key in self._cache:
            self._cache[key] = self._cache[key].evolve(held=True)

    def _whose(self, run: FlowRun) -> tuple[str, str]:
        """The user and account a rotation's run works on, from its parameters."""
        account = str(run.parameters.get("account_id") or self.connections.account_id)
        return str(run.parameters.get("user_name") or ""), account

    @property
    def actor(self) -> str:
        return f"{whoami()}, waker"


def waker_lease(connections: Connections) -> Lease:
    """The lease that makes one waker the active one, per Prefect server (renewed like a rotation's lease).

    Two Prefect servers may share one Vault (staging and production, say): each has its own waker, and each waker
    resumes only the runs that live on its server.
    """
    settings = connections.settings
    ttl = max(settings.lease_ttl, settings.waker_interval * 3)
    server = this_server()
    path = settings.waker_lease_path + (f"-{hashlib.sha256(server.encode()).hexdigest()[:10]}" if server else "")
    return Lease(
        LeaseRecord(connections.kv, path), holder=f"{whoami()}, waker of {server or 'a temporary server'}", ttl=ttl
    )


def keep_waking(
    stop: threading.Event,
    connections: Connections | None = None,
    *,
    run_for: timedelta | None = None,
    leave_if_busy: bool = False,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> None:
    """Be the waker until ``stop`` is set (or ``run_for`` passed): take the waker lease when it is free, sweep
    every waker interval while holding it, and hand it back at the end. A failed sweep (Vault, IAM or Prefect
    unreachable) is a missed look, tried again at the next interval.

    Args:
        stop: Set it to end the loop.
        connections: AWS and Vault (default: from the environment).
        run_for: End after this long (a ``wake-rotations`` run).
        leave_if_busy: End at once when another waker holds the lease (a second scheduled run is not needed).
        logger: Where to log (a flow run's logger in a run).
    """
    connections = connections or Connections.from_settings()
    log = logger or logging.getLogger("keyrotor.waker")
    waker = Waker(connections, logger=log)
    lease = waker_lease(connections)
    interval = connections.settings.waker_interval.total_seconds()
    ends = utcnow() + run_for if run_for is not None else None
    holding = False
    while not stop.is_set() and (ends is None or utcnow() < ends):
        try:
            if not holding:
                holding = lease.try_acquire()
                if holding:
                    log.info("This process is the waker now (checks parked rotations every %gs)", interval)
                elif leave_if_busy:
                    log.info("Another waker is active; nothing to do here")
                    return
            else:
                lease.renew()
                if lease.lost:
                    holding = False
                    log.warning("Lost the waker lease; another waker took over")
                    continue
            if holding:
                waker.sweep()
        except KeyrotorError as error:
            log.warning("Waker sweep missed: %s", error)
        except Exception:  # noqa: BLE001 - a bug in one sweep must not end the waker; it is logged with its traceback
            log.exception("Waker sweep failed")
        stop.wait(interval)
    if holding:
        lease.release()


def start_waker_thread(stop: threading.Event) -> threading.Thread:
    """Run :func:`keep_waking` in a daemon thread of this process (``keyrotor serve``)."""
    thread = threading.Thread(target=keep_waking, args=(stop,), name="keyrotor-waker", daemon=True)
    thread.start()
    return thread
