"""``keyrotor serve``: serve every keyrotor deployment from this process, no work pool or worker needed, and wake
parked rotations.

This is the embedded default for the local stack: open the Prefect UI, see the deployments, click "Run".
Nothing waits in a process here: a rotation waiting for its old key to go quiet is a suspended flow run, which this
process's waker thread resumes when the key is quiet; scheduled follow-ups (the deletion of an old key after its
grace period) wait in Prefect's database. At most ``limit`` flow runs work at once; waiting ones hold no slot.
"""

from __future__ import annotations

import logging
import os
import threading

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval
from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

from keyrotor.adapters.automations import HEARTBEAT_FREQUENCY
from keyrotor.adapters.prefect_api import synchronous
from keyrotor.deployments.table import ALL, Deployment
from keyrotor.waker.service import start_waker_thread


def build(deployment: Deployment) -> RunnerDeployment:
    """The runner deployment for one row of the table."""
    schedule = None
    if deployment.cron:
        schedule = Cron(deployment.cron, active=deployment.active)
    elif deployment.interval:
        schedule = Interval(deployment.interval, anchor_date=deployment.anchor, active=deployment.active)
    return synchronous(
        deployment.flow().to_deployment(
            name=deployment.name,
            description=deployment.description,
            tags=list(deployment.tags),
            schedule=schedule,
            **deployment.extra,
        )
    )


def build_deployments() -> list[RunnerDeployment]:
    """The deployments ``keyrotor serve`` offers (``prefect.yaml`` declares the same)."""
    return [build(deployment) for deployment in ALL]


def serve_all(limit: int, wake: bool = True) -> None:
    """Serve the deployments until interrupted, at most ``limit`` flow runs at once, with the waker in a thread.
    Its flow runs send heartbeats (unless the environment says otherwise), so a run whose process died is marked
    Crashed by the server's automation (:mod:`keyrotor.adapters.automations`)."""
    log_to_stderr()
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_FREQUENCY))
    stop = threading.Event()
    waker = start_waker_thread(stop) if wake else None
    # A woken rotation is Scheduled again: look for due runs every 2 s rather than Prefect's default 10 s, so it is
    # picked up within seconds (one cheap query per poll), unless the environment says otherwise.
    poll = float(os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") or 2)
    try:
        with temporary_settings(updates={PREFECT_RUNNER_POLL_FREQUENCY: poll}):
            serve(*build_deployments(), limit=limit)
    finally:
        stop.set()
        if waker is not None:
            waker.join(timeout=10)


def log_to_stderr() -> None:
    """The waker's lines beside the runner's, in the same format."""
    logger = logging.getLogger("keyrotor")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
