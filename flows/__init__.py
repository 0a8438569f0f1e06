"""The procedures, as Prefect flows. They orchestrate the steps in :mod:`keyrotor.tasks`; they never call AWS or Vault."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect import get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Failed

from keyrotor.core.errors import KeyrotorError


def refused(error: KeyrotorError) -> State:
    """End the flow run Failed with the operator's message, without a traceback for an expected refusal.

    A caller that runs the flow in-process still gets ``error`` raised. The message starts with the error's class
    name, so a caller that only sees the run's state (a deployment run) can tell the exit code.
    """
    get_run_logger().error("%s: %s", type(error).__name__, error)
    return Failed(message=f"{type(error).__name__}: {error}", data=error)


def run_name(verb: str, key: bool = False) -> Callable[[], str]:
    """A flow run's name after what it does and to whom: ``rotate alice``, ``retire AKIA... of alice in 111122223333``
    (the account only when one was given)."""

    def name() -> str:
        parameters = flow_run.parameters
        who = str(parameters.get("user_name", "?"))
        if key:
            who = f"{parameters.get('key_id', '?')} of {who}"
        account = parameters.get("account_id")
        return f"{verb} {who}" + (f" in {account}" if account else "")

    return name


class _NoTracebackForRefusals(logging.Filter):
    """Prefect logs a task's exception with its traceback; an expected refusal (a KeyrotorError) is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KeyrotorError):
            record.exc_info = None
            record.exc_text = None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_NoTracebackForRefusals())
