"""The procedures, as Prefect flows. They orchestrate the steps in :mod:`keyrotor.tasks`; they never call AWS or Vault.

Each flow takes one typed request (:mod:`keyrotor.core.inputs`), which Prefect's UI renders as the run's form and
validates before the run starts, and returns the rotation's record (:class:`~keyrotor.core.model.RotationState`), or,
for an expected refusal, a Failed state named after the error (:func:`refused`), which any caller turns back into
the same error with :func:`keyrotor.adapters.prefect_api.outcome`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect import get_run_logger
from prefect.client.schemas.objects import State
from prefect.exceptions import CancelledRun, FailedRun
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed

from keyrotor.core.errors import KeyrotorError, Rejected
from keyrotor.core.model import RotationState
from keyrotor.core.naming import run_title

#: Flow runs of this process that ended with an expected refusal, already said in one line.
_REFUSED: set[str] = set()


def refused(error: KeyrotorError) -> State:
    """End the flow run Failed, named after the error ("Still in use", "Bad input"...), with the operator's message
    as its one log line and its state message, and no traceback."""
    get_run_logger().error("%s: %s", error.state_name, error)
    if (run_id := flow_run.get_id()) is not None:
        _REFUSED.add(str(run_id))
    return Failed(name=error.state_name, message=str(error))


def rejected(state: RotationState) -> State:
    """End a rotation that an operator rejected as "Rejected" (Cancelled: stopped at a person's word, neither a
    success nor a failure); its record says who rejected it and why."""
    message = state.error or "rejected by an operator"
    get_run_logger().warning("Rejected: %s; both keys stay active", message)
    if (run_id := flow_run.get_id()) is not None:
        _REFUSED.add(str(run_id))
    return Cancelled(name=Rejected.state_name, message=message)


def run_name(verb: str, key: bool = False) -> Callable[[], str]:
    """A flow run's name after what it does and to whom: ``rotate alice``, ``retire AKIA... of alice in 111122223333``
    (the account only when one was given), read from the run's ``request``."""

    def name() -> str:
        request = flow_run.parameters.get("request")
        values = request.model_dump() if hasattr(request, "model_dump") else dict(request or {})
        user = str(values.get("user_name") or "?")
        key_id = str(values.get("key_id") or "?") if key else None
        return run_title(verb, user, str(values.get("account_id") or "") or None, key_id)

    return name


#: What Prefect's "Finished in state ..." means for a run that did not finish: it parked, or was paused.
_NOT_FINISHED = {
    "Finished in state Waiting": "Parked: the run is suspended (Waiting) and holds no process; the waker resumes it "
    "when the key it waits on has been quiet long enough",
    "Finished in state Suspended": "Paused: the run is suspended and holds no process; it goes on when resumed",
    "Finished in state Paused": "Paused: the run waits for an answer and goes on when it comes",
}


class _OneLineRefusals(logging.Filter):
    """Prefect logs a task's exception with its traceback, and the engine logs an unexpected exception for every run
    that does not complete; an expected refusal is one line (:func:`refused`), nothing more. A run that parked or was
    paused did not finish, whatever Prefect's engine says."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        for prefect_says, meant in _NOT_FINISHED.items():
            if message.startswith(prefect_says):
                record.msg, record.args = meant, ()
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyrotorError):
            record.exc_info = None
            record.exc_text = None
        already_said = (
            isinstance(error, FailedRun | CancelledRun) and str(getattr(record, "flow_run_id", "")) in _REFUSED
        )
        return not already_said


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_OneLineRefusals())
