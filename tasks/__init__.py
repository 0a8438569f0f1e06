"""The steps of a rotation, as Prefect tasks. Each one looks at IAM and Vault first and does nothing already done.

A rotation's run shows three tasks (start, introduce the new key, retire the old one; see ``rotation.py``), which
chain the steps of ``keys.py``, ``vault.py`` and ``schedule.py``; the read-only checks around them (preflight,
taking the lease, polling the old key's last use) are plain functions that log to the run. Every task run costs the
Prefect server several writes, which a fleet pays per user.

Every task here runs with caching and result persistence off: a step's inputs and outputs hold gateways and
key ids, and the one value that must never reach Prefect's storage, the secret, never leaves Vault and memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

P = ParamSpec("P")
R = TypeVar("R")


def step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A step of a procedure as a Prefect task: named, never cached, its result never persisted."""

    return task(name=name, cache_policy=NO_CACHE, persist_result=False)
