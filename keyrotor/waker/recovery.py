"""The waker's second job: keep the promises a suspended run cannot keep itself.

* A pause from the Prefect UI is Suspended with a timeout (300 s by default) and Prefect fails the run when it
  passes, although the dialog says it resumes: the timeout is taken off (the pause never expires) and the pause is
  recorded in Vault; a run Prefect already failed that way is suspended again, resumable.
* A run whose process died with its runner or worker stays Running (or Pending) in Prefect for ever: once its
  user's lease has expired (or was never taken, or was let go and not taken again), it is scheduled again and
  another runner finishes it, at most :data:`MAX_REVIVALS` times.
* The fleet's artifact (``keyrotor-fleet``) is published when the fleet changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from prefect.client.schemas.objects import StateType

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_runs import RunControl, RunView
from keyrotor.core.model import PauseKind
from keyrotor.waker.checks import SweepReport

#: A run that never took its user's lease (or let it go) is presumed dead only after this long: it may be starting,
#: or finishing.
SETTLING = timedelta(seconds=30)
#: A run that keeps dying is scheduled again at most this many times; after that it is left for a person.
MAX_REVIVALS = 3

Hold = Callable[[str, str, str, PauseKind, str, datetime], None]


class Recovery:
    """Looks for UI pauses and dead runs among the runs of the deployments whose runs park."""

    def __init__(
        self,
        connections: Connections,
        runs: RunControl,
        deployments: Sequence[str],
        hold: Hold,
        log: logging.Logger,
    ) -> None:
        self.connections = connections
        self.runs = runs
        self.deployments = list(deployments)
        self.hold = hold
        self.log = log
        self._revived: dict[str, int] = {}

    def fix_ui_pauses(self, now: datetime, report: SweepReport) -> None:
        """Make UI pauses never expire (and suspend again those that did), recording each as a hold."""
        for run in self.runs.runs_of(self.deployments, [StateType.PAUSED]):
            if run.parked or run.pause_timeout is None:
                continue
            self.runs.never_expire(run)
            self._hold(run, "suspended from Prefect", now, report)
            self.log.info(
                "Flow run %s (%s) was paused from the UI: it now waits for Resume, with no timeout", run.id, run.name
            )
        for run in self.runs.runs_of(self.deployments, [StateType.FAILED], limit=50):
            if not run.expired_pause or not run.user_name:
                continue
            state = self.connections.records(run.user_name, self._account(run)).load_state()
            if state is None or state.phase.terminal or run.id not in state.run_ids():
                continue
            self.runs.suspend(run.id, force=True)
            self._hold(run, "suspended from Prefect (its pause had expired)", now, report)
            self.log.info("Flow run %s (%s) failed when its pause expired: paused again, resumable", run.id, run.name)

    def restart_dead_runs(self, now: datetime, report: SweepReport) -> None:
        """Schedule again the runs whose process died mid-work with its runner or worker: still Running or Pending in
        Prefect (or Crashed), their user's lease expired, or never taken (or let go) for a while."""
        dead = [StateType.RUNNING, StateType.PENDING, StateType.CRASHED]
        for run in self.runs.runs_of(self.deployments, dead):
            if not run.user_name or self._revived.get(run.id, 0) >= MAX_REVIVALS or not self._lease_says_dead(run, now):
                continue
            state = self.connections.records(run.user_name, self._account(run)).load_state()
            if state is not None and state.phase.terminal and run.id in state.run_ids():
                continue  # it finished its work and died reporting it
            self.revive(run, self._account(run), run.user_name, report, now)

    def _lease_says_dead(self, run: RunView, now: datetime) -> bool:
        """The run's lease expired unrenewed (its process died; within one lease TTL), or it has held none for
        :data:`SETTLING` (it never started, or died between letting the lease go and leaving Running)."""
        assert run.user_name is not None
        stored = self.connections.records(run.user_name, self._account(run)).lease.read_lease()
        lease = stored.data if stored else None
        if lease is not None and lease.owner:
            if lease.flow_run_id != run.id:
                return False  # another run works on this user now; this one is a leftover it will not need
            return lease.expires_at is None or lease.expires_at <= now  # its holder stopped renewing it
        let_go = lease.released_at if lease is not None else None
        quiet_since = max(at for at in (let_go, run.timestamp) if at is not None) if let_go or run.timestamp else None
        return quiet_since is None or now - quiet_since >= SETTLING

    def revive(self, run: RunView, account: str, user: str, report: SweepReport, now: datetime) -> None:
        self._revived[run.id] = self._revived.get(run.id, 0) + 1
        self.runs.reschedule(run.id, "Recovering", now)
        report.recovered.append(user)
        self.log.warning(
            "Flow run %s (%s) of %r was %s with nobody running it: scheduled again",
            run.id,
            run.name,
            user,
            run.state_name,
        )

    def _hold(self, run: RunView, reason: str, now: datetime, report: SweepReport) -> None:
        if run.user_name:
            self.hold(self._account(run), run.user_name, run.id, PauseKind.PREFECT, reason, now)
            report.held.append(run.user_name)

    def _account(self, run: RunView) -> str:
        return run.account_id or self.connections.account_id
