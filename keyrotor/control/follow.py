"""``keyrotor rotate`` against a Prefect server that serves the deployments: start the rotation there and follow it.

The rotation runs on the runners or workers, where waiting holds nothing; the command follows its run until the
new key is published and the run parks (or it ends), prints what happens next and when, and returns. ``--wait``
follows it to its end instead.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import server_name
from keyrotor.adapters.prefect_runs import RunControl, RunView
from keyrotor.core.errors import PrefectUnavailable, error_from_state
from keyrotor.core.model import Phase, RotationState
from keyrotor.core.pickup import why_not_started
from keyrotor.core.timestamps import utcnow


class Stop(StrEnum):
    """Why the command stopped following a run."""

    ENDED = "ended"
    PARKED = "parked"  # waits for its key to go quiet, holding no process
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting approval"


@dataclass(frozen=True)
class Followed:
    """Where the followed run is when the command stops following: its state record and the run."""

    state: RotationState | None
    run: RunView
    stopped_because: Stop


def follow(
    connections: Connections,
    runs: RunControl,
    user_name: str,
    run_id: str,
    *,
    deployment: str,
    to_the_end: bool,
    progress: Callable[[str], None],
    poll: float = 1.0,
) -> Followed:
    """Follow the run until it parks or pauses (or, ``to_the_end``, until it ends), reporting each new phase.

    Raises:
        KeyrotorError: the run failed (the error it ended with, exit code and all), crashed or was cancelled.
        PrefectUnavailable: no runner or worker started it within ``KEYROTOR_PICKUP_TIMEOUT``: the message says why
            (nothing polls: the run is cancelled; the work pool is full: it stays queued).
    """
    records = connections.records(user_name)
    created = time.monotonic()
    patience = connections.settings.pickup_timeout.total_seconds()
    said: set[str] = set()

    def say(line: str) -> None:
        if line not in said:
            said.add(line)
            progress(line)

    while True:
        run = runs.read(run_id)
        if run is None:
            raise PrefectUnavailable(f"flow run {run_id} is gone from {server_name()}")
        state = records.load_state()
        if state is not None and state.last_flow_run_id == run_id:
            say(f"phase {state.phase.value}")
        if run.final:
            if run.state.value == "COMPLETED":
                return Followed(records.load_state(), run, Stop.ENDED)
            raise error_from_state(run.state_name, run.message or f"flow run {run.name} ended {run.state_name}")
        if run.state.value == "SCHEDULED" and run.state_name != "Resuming" and run.run_count == 0:
            if time.monotonic() - created > patience:
                problem, queued = why_not_started(runs.pickup(deployment), utcnow())
                if not queued:
                    runs.cancel(run_id, "nothing picked it up")
                raise PrefectUnavailable(
                    f"flow run {run.name} did not start within {patience:g}s on {server_name()}"
                    f"{' (it stays queued)' if queued else ' (cancelled)'}: {problem}"
                )
            say("scheduled; waiting for a runner or worker to start it")
        if run.state.value == "PAUSED" and not to_the_end:
            if run.parked:
                return Followed(records.load_state(), run, Stop.PARKED)
            reason = Stop.AWAITING_APPROVAL if run.waits_for_input else Stop.PAUSED
            return Followed(records.load_state(), run, reason)
        time.sleep(poll)


def in_grace_period(state: RotationState) -> bool:
    """Deactivated, its deletion later (a grace period of 0s deletes at once: it is about to complete)."""
    return state.phase is Phase.DEACTIVATED and state.delete_after is not None and state.delete_after > utcnow()


def follow_fleet(
    connections: Connections,
    runs: RunControl,
    started: dict[tuple[str, str], str],
    *,
    progress: Callable[[str], None],
    poll: float = 2.0,
) -> dict[tuple[str, str], RotationState | None]:
    """Follow the remedies a remediation started ((account, user) -> flow run id) until each has ended or
    deactivated its key, printing counts per phase when they change; returns each one's last state record."""
    last: dict[tuple[str, str], RotationState | None] = {}
    pending = dict(started)
    shown = ""
    while pending:
        for (account, user), run_id in list(pending.items()):
            state = connections.records(user, account).load_state()
            last[(account, user)] = state
            ours = state is not None and run_id in (state.flow_run_id, state.last_flow_run_id)
            if ours and state is not None and (state.phase.terminal or in_grace_period(state)):
                del pending[(account, user)]
            elif not ours:
                run = runs.read(run_id)
                if run is not None and run.final:
                    del pending[(account, user)]  # it ended without a rotation of its own (refused first)
        counts = Counter((s.phase.value if s else "not started") for key, s in last.items() if key in started)
        line = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))
        if line != shown:
            progress(f"{len(started) - len(pending)}/{len(started)} done: {line}")
            shown = line
        if pending:
            time.sleep(poll)
    return last
