"""The procedures, as Prefect flows. They orchestrate the steps in :mod:`keyrotor.tasks`; they never call AWS or Vault."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.states import Failed, State

from keyrotor.errors import KeyrotorError


def refused(error: KeyrotorError) -> State:
    """End the flow run Failed with the operator's message, without a traceback for an expected refusal.

    A caller that runs the flow in-process still gets ``error`` raised.
    """
    get_run_logger().error("%s: %s", type(error).__name__, error)
    return Failed(message=str(error), data=error)
