"""Write ``prefect.yaml`` from the deployment table, so ``prefect deploy --all`` and ``keyrotor serve`` offer the same
deployments: ``python -m keyrotor.deployments.prefect_yaml > prefect.yaml`` (a test checks the file is current)."""

from __future__ import annotations

import json

from keyrotor.deployments.table import ALL, Deployment

HEADER = """\
# keyrotor's deployments, read by `prefect deploy --all` (run from this folder).
# Generated from deployments/table.py: python -m keyrotor.deployments.prefect_yaml > prefect.yaml
# They run on a process work pool; create it (with a concurrency limit) and start workers (README, "Workers").
# Each entrypoint is a module of the installed keyrotor package and nothing is pulled (`pull: []`), so a worker
# runs them from any folder on any machine where keyrotor is installed; nothing binds this checkout's path.
# For the local stack without a work pool, `keyrotor serve` serves the same deployments from one process.
# The worker's environment must carry keyrotor's settings: AWS_* (or a profile), VAULT_ADDR, VAULT_TOKEN, KEYROTOR_*.
name: keyrotor
prefect-version: 3.8.8
pull: []

deployments:
"""


def _entry(deployment: Deployment) -> str:
    lines = [
        f"  - name: {deployment.name}",
        f"    entrypoint: {deployment.entrypoint}",
        f"    description: {json.dumps(deployment.description)}",
        f"    tags: [{', '.join(deployment.tags)}]",
    ]
    if deployment.cron:
        lines += ["    schedules:", f"      - cron: {json.dumps(deployment.cron)}"]
    elif deployment.interval:
        lines += ["    schedules:", f"      - interval: {int(deployment.interval.total_seconds())}"]
        if deployment.anchor:
            lines.append(f"        anchor_date: {json.dumps(deployment.anchor.isoformat())}")
    if (deployment.cron or deployment.interval) and not deployment.active:
        lines.append("        active: false")
    for key, value in deployment.extra.items():
        lines.append(f"    {key}: {json.dumps(value)}")
    lines += ["    work_pool:", "      name: keyrotor"]
    return "\n".join(lines)


def render() -> str:
    """The whole ``prefect.yaml``."""
    return HEADER + "\n\n".join(_entry(deployment) for deployment in ALL) + "\n"


if __name__ == "__main__":
    print(render(), end="")
