"""``keyrotor serve``: serve every keyrotor deployment from this process, no work pool or worker needed.

This is the embedded default for the local stack: open the Prefect UI, see the deployments, click "Run".
Scheduled follow-ups (the deletion of an old key after its grace period) wait in Prefect's database, not in
a process, and this server starts them when they are due.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from keyrotor.flows.delete_old_key import delete_old_key_after_grace
from keyrotor.flows.finish_due import finish_due_deletions
from keyrotor.flows.remediate import audit_and_remediate
from keyrotor.flows.retire import retire_access_key
from keyrotor.flows.rollback import rollback_rotation
from keyrotor.flows.rotate import rotate_access_key

ROTATE = "rotate-access-key"
DELETE = "delete-old-key"
ROLLBACK = "rollback-rotation"
SWEEP = "finish-due-deletions"
SWEEP_CRON = "17 * * * *"  # hourly, off the full hour
RETIRE = "retire-access-key"
REMEDIATE = "audit-and-remediate"
REMEDIATE_CRON = "0 6 * * *"  # daily
NAMES = (ROTATE, DELETE, ROLLBACK, SWEEP, RETIRE, REMEDIATE)


def build_deployments() -> list[RunnerDeployment]:
    """The deployments ``keyrotor serve`` offers (their names match ``prefect.yaml``)."""
    return [
        rotate_access_key.to_deployment(
            name=ROTATE,
            description="Rotate one IAM user's access key. Parameters: user_name and optional timings.",
            tags=["keyrotor"],
        ),
        delete_old_key_after_grace.to_deployment(
            name=DELETE,
            description="Delete a rotation's deactivated old key once its grace period is over (scheduled by rotations).",
            tags=["keyrotor"],
        ),
        rollback_rotation.to_deployment(
            name=ROLLBACK,
            description="Return a user to the old key: reactivate it, restore the previous secret, deactivate the new key.",
            tags=["keyrotor"],
        ),
        finish_due_deletions.to_deployment(
            name=SWEEP,
            description="Hourly safety net: delete every old key whose grace period is over (from Vault's records).",
            cron=SWEEP_CRON,
            tags=["keyrotor"],
        ),
        retire_access_key.to_deployment(
            name=RETIRE,
            description="Retire one key of a user without creating another (remediation of two active or unused keys).",
            tags=["keyrotor"],
        ),
        audit_and_remediate.to_deployment(
            name=REMEDIATE,
            description="Daily: audit the account against the access-key rules and remedy every flagged user.",
            cron=REMEDIATE_CRON,
            tags=["keyrotor"],
        ),
    ]


def serve_all(limit: int | None = None) -> None:
    """Serve the deployments until interrupted; ``limit`` caps concurrent flow runs."""
    serve(*build_deployments(), limit=limit)
