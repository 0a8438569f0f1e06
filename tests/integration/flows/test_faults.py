"""Nothing lost, nothing broken, first time: rotations through a proxy that injects faults between keyrotor and
IAM/STS and Vault (throttling, server errors, dropped connections, and answers lost after the change took effect),
while applications read Vault and call AWS directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import Phase
from keyrotor.stack.faults import FAULTS, FaultPlan, FaultProxy
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_popen
from tests.integration.support import active_keys, assert_rotated, required

pytestmark = pytest.mark.integration

#: Patient enough for 30% faults: every call is retried through them; the lease outlives a few failed renewals.
PATIENT = {
    "KEYROTOR_VAULT_RETRY_TIMEOUT": "90s",
    "KEYROTOR_AWS_RETRY_TIMEOUT": "90s",
    "KEYROTOR_AWS_MAX_ATTEMPTS": "3",
    "KEYROTOR_LEASE_TTL": "15s",
    "KEYROTOR_VERIFY_TIMEOUT": "90s",
}


@pytest.fixture
def proxies(stack_environ: dict[str, str]) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    with (
        FaultProxy(stack_environ["AWS_ENDPOINT_URL"], FaultPlan(seed=7)) as iam_proxy,
        FaultProxy(stack_environ["VAULT_ADDR"], FaultPlan(seed=11), vault=True) as vault_proxy,
    ):
        yield iam_proxy, vault_proxy


def through(proxies: tuple[FaultProxy, FaultProxy], env: dict[str, str]) -> dict[str, str]:
    iam_proxy, vault_proxy = proxies
    return {**env, **PATIENT, "AWS_ENDPOINT_URL": iam_proxy.url, "VAULT_ADDR": vault_proxy.url}


def test_rotations_converge_on_their_first_run_at_30_percent_faults_of_every_kind(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    for proxy in proxies:
        proxy.plan.rate = 0.3
    users = [user_factory("faults") for _ in range(6)]
    old = {user: active_keys(iam, user)[0] for user in users}
    apps = {user: SimulatedApp(user, connections.records(user), refresh=0.5) for user in users}
    for app in apps.values():
        app.start()
    try:
        env = through(proxies, stack_environ)
        runs = {user: keyrotor_popen(env, "rotate", user, "--local", "--quiet-period", "3s") for user in users}
        ended = {user: (process.wait(timeout=600), process.communicate()[1]) for user, process in runs.items()}
    finally:
        stats = {user: app.stop() for user, app in apps.items()}
    for proxy in proxies:
        proxy.plan.rate = 0.0
    failed = {user: err[-2000:] for user, (code, err) in ended.items() if code != 0}
    assert not failed, f"{len(failed)} of {len(users)} needed a person: {failed}"
    for user in users:  # one key, active, in Vault, working; no key whose secret nobody holds; nothing stashed
        assert_rotated(iam, connections, user, old[user])
        assert connections.records(user).stashed() is None
        assert required(connections.records(user).load_state()).phase is Phase.COMPLETED
        assert stats[user].errors == [], stats[user].errors[:3]
    counts = proxies[0].plan.counts + proxies[1].plan.counts
    assert all(counts[fault] > 0 for fault in FAULTS), counts  # every kind of fault happened
    calls = sum(s.calls for s in stats.values())
    print(f"faults injected: {dict(counts)}; application calls: {calls}, refused: 0")
