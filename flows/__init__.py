"""The procedures, as Prefect flows. They orchestrate the steps in :mod:`keyrotor.tasks`; they never call AWS or Vault."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.states import Failed, State

from keyrotor.errors import KeyrotorError


def refused(error: KeyrotorError) -> State:
    """End the flow run Failed with the operator's message, without a traceback for an expected refusal.

    A caller that runs the flow in-process still gets ``error`` raised. The message starts with the error's class
    name, so a caller that only sees the run's state (a deployment run) can tell the exit code.
    """
    get_run_logger().error("%s: %s", type(error).__name__, error)
    return Failed(message=f"{type(error).__name__}: {error}", data=error)


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
