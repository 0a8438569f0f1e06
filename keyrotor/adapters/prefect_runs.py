"""Prefect's flow runs as the waker and the operator's commands see them: one typed view of a run, and one
interface for what they do to runs (read, resume, suspend, reschedule, cancel, publish an artifact).

Like hvac's adapter, :class:`RunControl` is handed to whoever needs it, so the waker's unit tests use an in-memory
one with a controlled clock; :class:`PrefectRuns` is the real one, over Prefect's client, with every failure to
reach the server translated once (:func:`keyrotor.adapters.prefect_api.prefect_call`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType
from prefect.exceptions import NotPausedError, ObjectNotFound

from keyrotor.adapters.prefect_api import WAITING, prefect_call, this_server
from keyrotor.core.pickup import Pickup

#: The message Prefect gives a run whose pause (with a timeout, as the UI's Pause sets) expired.
EXPIRED_PAUSE = "The flow was paused and never resumed"
SUSPENDED = "Suspended"


@dataclass(frozen=True)
class RunView:
    """One flow run, as much of it as keyrotor decides on."""

    id: str
    name: str
    state: StateType
    state_name: str
    timestamp: datetime | None = None
    message: str = ""
    pause_timeout: datetime | None = None
    waits_for_input: bool = False
    deployment_id: str | None = None
    user_name: str | None = None
    account_id: str | None = None
    run_count: int = 0
    tags: tuple[str, ...] = field(default=())

    @property
    def parked(self) -> bool:
        """Suspended by keyrotor itself while it waits for a key to go quiet (state "Waiting")."""
        return self.state is StateType.PAUSED and self.state_name == WAITING

    @property
    def paused(self) -> bool:
        """Paused or suspended by someone (the UI, an operator, the approval gate), not parked."""
        return self.state is StateType.PAUSED and not self.parked

    @property
    def final(self) -> bool:
        return self.state in (StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED)

    @property
    def expired_pause(self) -> bool:
        """Failed by Prefect because a pause with a timeout passed it (the UI's Pause, left alone)."""
        return self.state is StateType.FAILED and EXPIRED_PAUSE in self.message

    @classmethod
    def of(cls, run: FlowRun) -> RunView:
        state = run.state
        who = _whose(run.parameters)
        return cls(
            id=str(run.id),
            name=run.name,
            state=state.type if state else StateType.SCHEDULED,
            state_name=(state.name if state else None) or "",
            timestamp=state.timestamp if state else None,
            message=(state.message if state else None) or "",
            pause_timeout=state.state_details.pause_timeout if state else None,
            waits_for_input=bool(state and state.state_details.run_input_keyset),
            deployment_id=str(run.deployment_id) if run.deployment_id else None,
            user_name=who[0],
            account_id=who[1],
            run_count=run.run_count,
            tags=tuple(run.tags),
        )


def _whose(parameters: dict[str, Any]) -> tuple[str | None, str | None]:
    """The user and account a run acts on, from its ``request`` parameter."""
    request = parameters.get("request")
    values = request if isinstance(request, dict) else parameters
    user = values.get("user_name")
    account = values.get("account_id")
    return (str(user) if user else None, str(account) if account else None)


class RunControl(Protocol):
    """What keyrotor does to flow runs. ``server`` is the API URL of the Prefect server they live on."""

    server: str

    def read(self, run_id: str) -> RunView | None: ...

    def resume(self, run_id: str, run_input: dict[str, Any] | None = None) -> bool: ...

    def suspend(self, run_id: str, timeout: timedelta | None = None, *, force: bool = False) -> None: ...

    def never_expire(self, run: RunView) -> None: ...

    def reschedule(self, run_id: str, reason: str, at: datetime) -> None: ...

    def cancel(self, run_id: str, reason: str) -> None: ...

    def runs_of(self, deployments: Sequence[str], states: Sequence[StateType], limit: int = 200) -> list[RunView]: ...

    def publish_markdown(self, key: str, markdown: str, description: str) -> None: ...

    def pickup(self, deployment: str) -> Pickup: ...


class PrefectRuns:
    """:class:`RunControl` over Prefect's client, for the server in ``PREFECT_API_URL`` (or the temporary one)."""

    def __init__(self) -> None:
        self.server = this_server()
        self._deployments: dict[str, UUID] = {}

    def read(self, run_id: str) -> RunView | None:
        """A flow run, or None when there is no such run."""
        with prefect_call(f"read flow run {run_id}"), get_client(sync_client=True) as client:
            try:
                return RunView.of(client.read_flow_run(UUID(run_id)))
            except ObjectNotFound:
                return None

    def resume(self, run_id: str, run_input: dict[str, Any] | None = None) -> bool:
        """Resume a paused run (Prefect reschedules a suspended one); False when it was not paused any more."""
        from prefect.flow_runs import resume_flow_run

        try:
            with prefect_call(f"resume flow run {run_id}"):
                resume_flow_run(UUID(run_id), run_input=run_input)
        except NotPausedError:  # resumed (or ended) meanwhile
            return False
        return True

    def suspend(self, run_id: str, timeout: timedelta | None = None, *, force: bool = False) -> None:
        """Suspend a run as the UI's Pause does (Suspended, rescheduled on resume); ``timeout`` None never expires.
        ``force`` also moves a run that is not running (e.g. suspended for a wait, or failed by an expired pause)."""
        until = datetime.now(UTC) + timeout if timeout else None
        details = StateDetails.model_validate({"pause_reschedule": True, "pause_timeout": until})
        state = State(type=StateType.PAUSED, name=SUSPENDED, state_details=details)
        with prefect_call(f"suspend flow run {run_id}"), get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), state, force=force)

    def never_expire(self, run: RunView) -> None:
        """Take the timeout off a pause (the UI's Pause sets one, and Prefect fails the run when it passes)."""
        details = StateDetails.model_validate({"pause_reschedule": True, "pause_timeout": None})
        state = State(type=StateType.PAUSED, name=run.state_name or SUSPENDED, state_details=details)
        self._force(run.id, state)

    def reschedule(self, run_id: str, reason: str, at: datetime) -> None:
        """Schedule a run again (its process died): another runner or worker runs it from the top."""
        from prefect.states import Scheduled

        self._force(run_id, Scheduled(name=reason, scheduled_time=at))

    def cancel(self, run_id: str, reason: str) -> None:
        from prefect.states import Cancelled

        self._force(run_id, Cancelled(message=reason))

    def _force(self, run_id: str, state: State) -> None:
        with prefect_call(f"set the state of flow run {run_id}"), get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), state, force=True)

    def runs_of(self, deployments: Sequence[str], states: Sequence[StateType], limit: int = 200) -> list[RunView]:
        """Runs of these deployments (``flow/deployment`` names) in these states, most recently expected first."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.sorting import FlowRunSort

        ids = self._deployment_ids(deployments)
        if not ids:
            return []
        runs_filter = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=ids),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states))),
        )
        with prefect_call("list flow runs"), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=runs_filter, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit
            )
        return [RunView.of(run) for run in runs]

    def _deployment_ids(self, names: Sequence[str]) -> list[UUID]:
        missing = [name for name in names if name not in self._deployments]
        if missing:
            with prefect_call("read keyrotor's deployments"), get_client(sync_client=True) as client:
                for name in missing:
                    try:
                        self._deployments[name] = client.read_deployment_by_name(name).id
                    except ObjectNotFound:
                        continue
        return [self._deployments[name] for name in names if name in self._deployments]

    def pickup(self, deployment: str) -> Pickup:
        """Who could start the deployment's runs: its work pool's limit, runs and workers, or a runner's last poll."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            WorkPoolFilter,
            WorkPoolFilterName,
        )

        with prefect_call(f"read deployment {deployment}"), get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            if not found.work_pool_name:
                return Pickup(deployment, None, last_polled=found.last_polled)
            pool = client.read_work_pool(found.work_pool_name)
            workers = client.read_workers_for_work_pool(found.work_pool_name)
            states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING]))
            busy = client.count_flow_runs(
                flow_run_filter=FlowRunFilter(state=states),
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[found.work_pool_name])),
            )
        beats = {worker.name: worker.last_heartbeat_time for worker in workers}
        return Pickup(deployment, pool.name, pool.concurrency_limit, busy, beats)

    def publish_markdown(self, key: str, markdown: str, description: str) -> None:
        """A new version of the artifact ``key``: linked to the current flow run when there is one (the run's
        Artifacts tab), else to none (the waker, the operator's commands)."""
        from prefect.artifacts import create_markdown_artifact
        from prefect.client.schemas.actions import ArtifactCreate
        from prefect.context import FlowRunContext

        with prefect_call(f"publish the artifact {key}"):
            if FlowRunContext.get() is not None:
                create_markdown_artifact(key=key, markdown=markdown, description=description)
                return
            with get_client(sync_client=True) as client:
                client.create_artifact(ArtifactCreate(key=key, type="markdown", data=markdown, description=description))
