"""The waker's first job: check every parked rotation when its look is due, and resume those that can move on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_runs import RunControl, RunView
from keyrotor.adapters.records import hold_rotation
from keyrotor.core.decisions import check_quiet
from keyrotor.core.errors import KeyrotorError, RotationConflict
from keyrotor.core.model import Look, Pause, PauseKind, Quiet, Wait

Key = tuple[str, str]  # (account id, user name)
#: A run resumed by the waker is given this long to park again (or end) before its record is read as new.
RESUME_GRACE = timedelta(minutes=5)


@dataclass
class SweepReport:
    """What one sweep did, for logs and tests."""

    checked: int = 0
    looked: list[str] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    next_due: datetime | None = None


@dataclass(frozen=True)
class Hooks:
    """What the checks tell the rest of the waker: a record changed (publish the user's view), or a run died after
    it was resumed (schedule it again)."""

    changed: Callable[[str, str], None]
    revive: Callable[[RunView, str, str, SweepReport], None]


class DueChecks:
    """Checks parked rotations when due, keeping what it read between sweeps so a sweep costs one listing of the
    waiting index and one read per changed record."""

    def __init__(
        self, connections: Connections, runs: RunControl, hooks: Hooks, actor: str, log: logging.Logger
    ) -> None:
        self.connections = connections
        self.runs = runs
        self.hooks = hooks
        self.actor = actor
        self.log = log
        self._cache: dict[Key, Wait] = {}
        self._resumed: dict[Key, tuple[str, datetime]] = {}  # wait ids resumed, until their runs park again or end

    def forget(self) -> None:
        """Read every record afresh at the next sweep: nothing stays stale for long."""
        self._cache.clear()

    def sweep(self, now: datetime, report: SweepReport) -> None:
        self._refresh(now)
        for key, wait in sorted(self._cache.items(), key=lambda item: item[1].next_check_at):
            if wait.held or wait.next_check_at > now:
                continue
            report.checked += 1
            self._check(key, wait, now, report)
        due = [wait.next_check_at for wait in self._cache.values() if not wait.held]
        report.next_due = min(due) if due else None

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
            if wait.prefect_api and wait.prefect_api != self.runs.server:
                self._cache[key] = replace(wait, held=True)  # another Prefect server's run: its wakers' business
                continue
            if resumed is not None:
                wait_id, at = resumed
                if wait.wait_id == wait_id and now - at < RESUME_GRACE:
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
            used = self.connections.iam_in(fresh.account_id).last_used(fresh.key_id)
        except KeyrotorError as error:  # a missed look, not a failure: try again after a poll interval
            self.log.warning("Could not read the last use of %s (%s): %s", fresh.key_id, fresh.user_name, error)
            self._save(key, replace(fresh, next_check_at=now + fresh.poll_interval))
            return
        decision = check_quiet(
            since=fresh.since,
            last_used=used,
            quiet_period=fresh.quiet_period,
            poll_interval=fresh.poll_interval,
            deadline=fresh.wait_deadline,
            now=now,
        )
        look = Look(now, used, decision.outcome)
        if decision.outcome is Quiet.WAIT:
            assert decision.next_check_at is not None
            if self._save(key, replace(fresh, next_check_at=decision.next_check_at, last_check=look)):
                report.looked.append(fresh.user_name)
                self.hooks.changed(fresh.account_id, fresh.user_name)
            return
        if self._resume(fresh, now, report):
            self._resumed[key] = (fresh.wait_id, now)
            self._cache.pop(key, None)
            self.log.info(
                "Woke %s of %r (flow run %s): key %s %s",
                fresh.rotation_id,
                fresh.user_name,
                fresh.flow_run_id,
                fresh.key_id,
                "quiet" if decision.outcome is Quiet.QUIET else "still in use at the deadline",
            )

    def _save(self, key: Key, wait: Wait) -> bool:
        """Write a changed waiting record (check-and-set); True when written. When the rotation wrote a newer one
        meanwhile, it is read next sweep; when Vault fails, the change is kept here until it can be written."""
        try:
            self._cache[key] = self.connections.waiting.write(wait)
        except RotationConflict:
            self._cache.pop(key, None)
            return False
        except KeyrotorError as error:
            self.log.warning("Could not record the look at %s (%s): %s", wait.key_id, wait.user_name, error)
            self._cache[key] = wait
            return False
        return True

    def _resume(self, wait: Wait, now: datetime, report: SweepReport) -> bool:
        """Resume the parked run; True when it is on its way (resumed now, or already)."""
        key = (wait.account_id, wait.user_name)
        try:
            run = self.runs.read(wait.flow_run_id)
        except KeyrotorError as error:
            self.log.warning("Cannot read flow run %s of %r: %s", wait.flow_run_id, wait.user_name, error)
            return False
        if run is None:
            self.log.error(
                "Flow run %s of %r's rotation is gone from Prefect; `keyrotor rotate %s` continues the rotation",
                wait.flow_run_id,
                wait.user_name,
                wait.user_name,
            )
            self._save(key, replace(wait, held=True))  # a person continues it (`keyrotor rotate`): never logged twice
            return False
        if run.parked:
            try:
                resumed = self.runs.resume(run.id)
            except KeyrotorError as error:
                self.log.warning("Could not resume flow run %s of %r: %s", run.id, wait.user_name, error)
                return False
            if resumed:
                report.woken.append(wait.user_name)
            return True
        if run.paused:  # an operator paused it; the index did not know yet
            self.hold(wait.account_id, wait.user_name, run.id, PauseKind.PREFECT, "suspended from Prefect", now)
            report.held.append(wait.user_name)
            return False
        if run.state.value in ("SCHEDULED", "PENDING", "RUNNING"):
            return True  # resumed by someone else (the UI's Resume)
        if run.state.value in ("CANCELLED", "CANCELLING"):
            self.log.warning("Flow run %s of %r was cancelled while it waited; leaving it", run.id, wait.user_name)
            self.hold(wait.account_id, wait.user_name, run.id, PauseKind.OPERATOR, "its flow run was cancelled", now)
            return False
        if run.state.value == "CRASHED":  # its process died after it was resumed: run it again
            self.hooks.revive(run, wait.account_id, wait.user_name, report)
            return True
        # Completed or failed: it moved on and the record stayed behind (an interrupted clean-up)
        self.log.info(
            "Dropping the stale waiting record of %r (flow run %s is %s)", wait.user_name, run.id, run.state_name
        )
        self.connections.waiting.remove(wait.account_id, wait.user_name, wait.wait_id)
        report.dropped.append(wait.user_name)
        return False

    def hold(self, account: str, user: str, run_id: str, kind: PauseKind, reason: str, now: datetime) -> None:
        """Record that the user's rotation is paused (its run ``run_id``), and leave it alone from now on."""
        records = self.connections.records(user, account)
        hold_rotation(records, self.connections.waiting, Pause(run_id, now, kind, reason), self.actor)
        key = (account, user)
        if key in self._cache:
            self._cache[key] = replace(self._cache[key], held=True)
        self.hooks.changed(account, user)
