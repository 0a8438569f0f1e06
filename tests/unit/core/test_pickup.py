"""Why a run was not started, as `keyrotor rotate` says it: nothing polls, or the pool is full (it stays queued)."""

from __future__ import annotations

from datetime import timedelta

from keyrotor.core.pickup import Pickup, why_not_started
from tests.unit.factories import T0

NOW = T0 + timedelta(minutes=10)


def test_a_runner_deployment_nobody_serves() -> None:
    said, queued = why_not_started(Pickup("rotate-access-key/rotate-access-key", None, last_polled=T0), NOW)
    assert "no runner serves" in said and "keyrotor serve" in said and not queued


def test_a_pool_whose_workers_went_silent_is_not_full_but_unpolled() -> None:
    pickup = Pickup("d", "keyrotor", limit=2, busy=2, workers={"worker-a": T0, "worker-b": None})
    said, queued = why_not_started(pickup, NOW)
    assert "no worker polls work pool keyrotor" in said and "worker-a (last seen" in said and not queued


def test_a_full_pool_with_live_workers_keeps_the_run_queued() -> None:
    pickup = Pickup("d", "keyrotor", limit=2, busy=2, workers={"worker-a": NOW - timedelta(seconds=20)})
    said, queued = why_not_started(pickup, NOW)
    assert "work pool keyrotor is full: 2 of 2 slots" in said and "set-concurrency-limit keyrotor" in said and queued


def test_live_workers_and_free_slots_point_at_the_workers_logs() -> None:
    pickup = Pickup("d", "keyrotor", limit=None, busy=5, workers={"worker-a": NOW})
    said, queued = why_not_started(pickup, NOW)
    assert "free slots" in said and "logs" in said and not queued
