"""``wake-rotations``: the waker as a flow, for workers (``keyrotor serve`` runs the same loop in a thread).

Scheduled every minute, each run stays most of the minute checking parked rotations every waker interval
(``KEYROTOR_WAKER_INTERVAL``), so one process wakes every waiting rotation, however many there are; a run that
finds another waker active ends at once.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from prefect import flow, get_run_logger

from keyrotor.waker.service import keep_waking


@flow(name="wake-rotations", flow_run_name="wake parked rotations", persist_result=False)
def wake_rotations(run_for_seconds: int = 55) -> None:
    """Check parked rotations when due and resume those whose old key went quiet, for ``run_for_seconds``."""
    keep_waking(
        threading.Event(),
        run_for=timedelta(seconds=run_for_seconds),
        leave_if_busy=True,
        logger=get_run_logger(),
    )
