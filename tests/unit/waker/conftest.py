"""A waker over in-memory IAM, Vault and Prefect runs, with a clock that moves only when a test says so."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import LastUsed, Phase, RotationState, Wait
from keyrotor.settings import Settings
from keyrotor.waker.service import Waker
from tests.unit.factories import parked, state
from tests.unit.fakes import FakeClock, FakeIam, FakeKV, FakeRuns

ACCOUNT = "123456789012"  # FakeIam's account
PARKING = "rotate-access-key/rotate-access-key"


@dataclass
class World:
    clock: FakeClock
    iam: FakeIam
    kv: FakeKV
    runs: FakeRuns
    connections: Connections
    waker: Waker

    def tick(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)

    def park(self, user: str = "alice", run_id: str = "run-1", **changes: Any) -> Wait:
        """A user whose rotation is published and parked in ``run_id`` (state Waiting), next look in 10 s."""
        (old,) = self.iam.add_user(user)
        now = self.clock.now
        record = state(
            user_name=user,
            account_id=ACCOUNT,
            phase=Phase.PUBLISHED,
            old_key_id=old,
            new_key_id="K-new",
            published_at=now,
            wait_deadline=now + timedelta(seconds=600),
            last_flow_run_id=run_id,
        )
        self.connections.records(user).save_state(record, "test")
        wait = parked(
            user_name=user,
            account_id=ACCOUNT,
            flow_run_id=run_id,
            key_id=old,
            since=now,
            wait_deadline=now + timedelta(seconds=600),
            next_check_at=now + timedelta(seconds=10),
            parked_at=now,
            prefect_api=self.runs.server,
        )
        self.runs.add(run_id, StateType.PAUSED, "Waiting", user_name=user, account_id=ACCOUNT)
        return self.connections.waiting.write(replace(wait, **changes))

    def use(self, key_id: str, seconds_ago: float = 0) -> None:
        """An application signs a request with ``key_id``."""
        self.iam.used[key_id] = LastUsed(key_id, self.clock.now - timedelta(seconds=seconds_ago), "sts", "eu-west-1")

    def record(self, user: str = "alice") -> RotationState:
        found = self.connections.records(user).load_state()
        assert found is not None
        return found

    def waiting(self, user: str = "alice") -> Wait | None:
        return self.connections.waiting.read(ACCOUNT, user)


@pytest.fixture
def world() -> World:
    clock, iam, kv = FakeClock(), FakeIam(), FakeKV()
    settings = Settings(vault_token=None, waker_interval=timedelta(seconds=1), lease_ttl=timedelta(seconds=60))
    connections = Connections(settings, iam, kv)
    runs = FakeRuns(clock)
    return World(clock, iam, kv, runs, connections, Waker(connections, runs, clock=clock))
