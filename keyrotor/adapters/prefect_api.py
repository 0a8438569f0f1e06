"""Prefect's run API as keyrotor uses it: flow runs read, suspended, resumed, renamed and tagged, with failures to reach
the server translated once, here, into :class:`~keyrotor.core.errors.PrefectUnavailable` (exit 9)."""

from __future__ import annotations

import contextvars
import fcntl
import inspect
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from keyrotor.core.errors import PrefectUnavailable

T = TypeVar("T")


def this_server() -> str:
    """The API URL of the Prefect server this process talks to ("" for Prefect's temporary server)."""
    return str(PREFECT_API_URL.value() or "").rstrip("/")


def server_name() -> str:
    """The Prefect server this process talks to, for messages."""
    url = PREFECT_API_URL.value()
    return f"the Prefect server at {url}" if url else "Prefect's temporary local server"


@contextmanager
def prefect_call(action: str) -> Iterator[None]:
    """Turn a Prefect server that cannot be reached (or answers with a server error) into PrefectUnavailable."""
    try:
        yield
    except ObjectNotFound:
        raise
    except (httpx.HTTPError, OSError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not _looks_like_connection_trouble(error):
            raise
        raise PrefectUnavailable(
            f"cannot {action}: {server_name()} did not answer ({type(error).__name__}: {error}); check PREFECT_API_URL "
            "and that the server is running"
        ) from None


def _looks_like_connection_trouble(error: RuntimeError) -> bool:
    return "connect" in str(error).lower()


def read_run(run_id: str | None) -> FlowRun | None:
    """A flow run, or None when there is no such run (or no id)."""
    if not run_id:
        return None
    with prefect_call(f"read flow run {run_id}"), get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return None


def run_state(run_id: str | None) -> State | None:
    """The current Prefect state of a flow run, or None when there is no such run."""
    run = read_run(run_id)
    return run.state if run else None


def suspend_run(run_id: str, timeout: timedelta | None = None, name: str = "Suspended", force: bool = False) -> State:
    """Suspend a flow run as the Prefect UI's "Pause" does (state Suspended, rescheduled on resume); ``timeout``
    None never expires. ``force`` also moves a run that is not running (e.g. already suspended for a wait)."""
    until = datetime.now(UTC) + timeout if timeout else None
    details = StateDetails.model_validate({"pause_reschedule": True, "pause_timeout": until})
    with prefect_call(f"suspend flow run {run_id}"), get_client(sync_client=True) as client:
        result = client.set_flow_run_state(
            UUID(run_id), State(type=StateType.PAUSED, name=name, state_details=details), force=force
        )
    return result.state if result.state is not None else State(type=StateType.PAUSED, name=name)


def add_tags(run_id: str, current: list[str], wanted: list[str]) -> None:
    """Add ``wanted`` tags to a flow run that has ``current`` ones (one call, none when nothing is missing)."""
    missing = [tag for tag in wanted if tag not in current]
    if missing:
        with prefect_call(f"tag flow run {run_id}"), get_client(sync_client=True) as client:
            client.update_flow_run(UUID(run_id), tags=[*current, *missing])


def start_temporary_server() -> None:
    """Without ``PREFECT_API_URL``, start Prefect's temporary local server now, one process at a time.

    Two keyrotor commands started together would otherwise start two temporary servers that migrate the same
    SQLite database in ``PREFECT_HOME`` at once, and one of them crashes. An exclusive lock on a file in
    ``PREFECT_HOME`` serializes the starts; once migrated, both servers share the database.
    """
    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_HOME

    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with (home / "keyrotor-server-start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            SubprocessASGIServer().start()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


WAITING = "Waiting"


def suspend_current_run(run_id: str, pause_key: str) -> State:
    """Suspend the calling flow run while it waits (state "Waiting", no timeout, rescheduled on resume), so its
    process can exit: returns the suspended state, to raise as Prefect's ``Pause``. Raises ``Pause`` itself with
    the operator's pause when Prefect answered with that instead (the UI's Pause landed first)."""
    from prefect.utilities.engine import propose_state_sync

    waiting = State(
        type=StateType.PAUSED,
        name=WAITING,
        state_details=StateDetails(pause_key=pause_key, pause_reschedule=True, pause_timeout=None),
    )
    with prefect_call(f"suspend flow run {run_id}"), get_client(sync_client=True) as client:
        return propose_state_sync(client, waiting, flow_run_id=UUID(run_id))


def resume_run(run_id: str) -> None:
    """Resume a paused flow run (Prefect reschedules a suspended one); ``NotPausedError`` if it is not paused."""
    from prefect.flow_runs import resume_flow_run

    with prefect_call(f"resume flow run {run_id}"):
        resume_flow_run(UUID(run_id))


def force_state(run_id: str, state: State) -> None:
    """Set a flow run's state past Prefect's orchestration rules (reviving a run, clearing a pause's timeout)."""
    with prefect_call(f"set the state of flow run {run_id}"), get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), state, force=True)


def deployment_ids(names: list[str]) -> dict[str, UUID]:
    """The ids of the deployments (``flow/deployment``) that exist on the server."""
    found: dict[str, UUID] = {}
    with prefect_call("read keyrotor's deployments"), get_client(sync_client=True) as client:
        for name in names:
            try:
                found[name] = client.read_deployment_by_name(name).id
            except ObjectNotFound:
                continue
    return found


def runs_of(deployments: list[UUID], state_types: list[StateType], limit: int = 200) -> list[FlowRun]:
    """Flow runs of these deployments in these states, most recently updated first."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    if not deployments:
        return []
    runs_filter = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=deployments),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=state_types)),
    )
    with prefect_call("list flow runs"), get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=runs_filter, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit
        )


def served(full_name: str) -> bool:
    """Whether a runner or worker polls for this deployment's runs now (its status is READY)."""
    from prefect.client.schemas.objects import DeploymentStatus

    if not PREFECT_API_URL.value():
        return False  # the temporary server has no deployments, and nothing serves them
    with prefect_call(f"read deployment {full_name}"), get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            return False
    return deployment.status == DeploymentStatus.READY


def start_run(
    full_name: str,
    parameters: dict[str, object],
    tags: list[str] | None = None,
    idempotency_key: str | None = None,
    scheduled_time: datetime | None = None,
) -> FlowRun:
    """Create a flow run of a deployment, to start now (or at ``scheduled_time``), and return at once (nothing waits
    for it here). ObjectNotFound when the server has no such deployment."""
    from prefect.deployments import run_deployment

    with prefect_call(f"start a run of {full_name}"):
        run = run_deployment(
            full_name,
            parameters=parameters,
            scheduled_time=scheduled_time,
            timeout=0,
            as_subflow=False,
            tags=tags,
            idempotency_key=idempotency_key,
        )
    return synchronous(run)


def synchronous(value: T | Coroutine[Any, Any, T]) -> T:
    """The value of one of Prefect's sync-or-async functions, called where it runs synchronously.

    Functions such as ``run_deployment`` and ``Flow.to_deployment`` are typed to return either their value or a
    coroutine, depending on the caller; keyrotor calls them from synchronous code only, so a coroutine here is a bug.
    """
    if inspect.isawaitable(value):
        raise TypeError(f"{value!r} is a coroutine: a Prefect function ran asynchronously in synchronous code")
    return value


def cancel_run(run_id: str, message: str) -> None:
    """Cancel a flow run that has not started (or stop one that has)."""
    from prefect.states import Cancelled

    force_state(run_id, Cancelled(message=message))


def detached_from_flow_run(function: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``function(*args)`` as a call for another thread, in a copy of this thread's context (taken now) minus the
    current flow run, so that a flow it calls becomes a flow run of its own (with this run's settings, tags and API
    client), not a subflow.

    Prefect has no public way to start a top-level run from inside a flow run; its current run lives in the
    ``FlowRunContext`` context variable, which is cleared in the copy only (the caller's run is untouched).
    In-process remediation relies on it so that every user's rotation is its own run, with its own name and tags.
    """
    from prefect.context import FlowRunContext

    context = contextvars.copy_context()

    def detached() -> T:
        cast("ContextVar[Any]", FlowRunContext.__var__).set(None)
        return function(*args)

    return lambda: context.run(detached)
