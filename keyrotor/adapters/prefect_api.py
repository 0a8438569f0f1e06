"""Prefect's run API as keyrotor uses it: flow runs read, suspended, resumed, renamed and tagged, with failures to reach
the server translated once, here, into :class:`~keyrotor.core.errors.PrefectUnavailable` (exit 9)."""

from __future__ import annotations

import contextvars
import fcntl
import inspect
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

import httpx
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from keyrotor.core.errors import KeyrotorError, PrefectUnavailable, error_from_state
from keyrotor.core.model import RotationState

T = TypeVar("T")
#: A flow that acts on one user's rotation: it returns the rotation's record, or a State for a refusal.
UserFlow = Flow[..., RotationState | State[Any]]


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


def run_state(run_id: str | None) -> State | None:
    """The current Prefect state of a flow run, or None when there is no such run (or no id)."""
    if not run_id:
        return None
    with prefect_call(f"read flow run {run_id}"), get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(UUID(run_id)).state
        except ObjectNotFound:
            return None


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
    flow_run_name: str | None = None,
) -> FlowRun:
    """Create a flow run of a deployment, to start now (or at ``scheduled_time``), named and tagged from its
    creation, and return at once (nothing waits for it here). ObjectNotFound when the server has no such deployment.
    With an ``idempotency_key``, a repeat returns the run created first."""
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
            flow_run_name=flow_run_name,
        )
    return synchronous(run)


def outcome(state: State) -> Any:
    """The value a flow run returned, from its final state (``flow(..., return_state=True)``); the error it was
    refused with, rebuilt by type from the state's name (:func:`keyrotor.core.errors.error_from_state`), when it
    did not complete."""
    if state.is_completed():
        return state.result(raise_on_failure=False)
    raise error_from_state(state.name, state.message)


def returned(state: State, kind: type[T]) -> T:
    """:func:`outcome`, checked to be a ``kind``."""
    value = outcome(state)
    if not isinstance(value, kind):
        raise KeyrotorError(f"the flow run returned {type(value).__name__}, not {kind.__name__}")
    return value


def run_here(flow: UserFlow, request: object) -> RotationState:
    """Run a one-user flow in this process and return the rotation's record, or raise the error it was refused with
    (by type: the same whether the run was here or on a worker)."""
    # A flow typed with `...` parameters reads return_state as one of its own keywords in Prefect's overloads.
    state = cast("State[Any]", flow(request, return_state=True))
    return returned(state, RotationState)


def synchronous(value: T | Coroutine[Any, Any, T]) -> T:
    """The value of one of Prefect's sync-or-async functions, called where it runs synchronously.

    Functions such as ``run_deployment`` and ``Flow.to_deployment`` are typed to return either their value or a
    coroutine, depending on the caller; keyrotor calls them from synchronous code only, so a coroutine here is a bug.
    """
    if inspect.isawaitable(value):
        raise TypeError(f"{value!r} is a coroutine: a Prefect function ran asynchronously in synchronous code")
    return value


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
