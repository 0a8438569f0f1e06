"""``audit-and-remediate``: audit the account and remedy every flagged user, each in its own flow run.

Each user's remedy (a rotation, or the retirement of a key) is its own flow run, so each can be paused,
resumed or rolled back alone; at most ``max_concurrency`` run at once; one user's failure never stops the others.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from keyrotor.adapters.prefect_api import detached_from_flow_run
from keyrotor.audit.settings import AuditSettings
from keyrotor.flows.retire import retire_access_key
from keyrotor.flows.rotate import rotate_access_key
from keyrotor.remediation.plan import Action, UserPlan
from keyrotor.tasks.remediate import (
    Remedies,
    audit_accounts_task,
    plan_remediation,
    publish_audit_and_plan,
    publish_outcome,
    remediate_user,
)

T = TypeVar("T")


@flow(name="audit-and-remediate", persist_result=False)
def audit_and_remediate(
    dry_run: bool = False,
    max_concurrency: int = 4,
    users: list[str] | None = None,
    quiet_period: str | None = None,
    poll_interval: str | None = None,
    max_wait: str | None = None,
    grace_period: str | None = None,
    accept_unsafe_quiet_period: bool = False,
    accounts: list[str] | None = None,
    organization: bool = False,
) -> dict[str, Any]:
    """Audit, publish the findings and the plan, then (unless ``dry_run``) remedy each flagged user.

    Args:
        dry_run: Publish the audit and the plan only; change nothing.
        max_concurrency: Most users remedied at once.
        users: Limit to these user names (globs); default: the whole account.
        quiet_period: Timings passed to every rotation and retirement (default: settings).
        poll_interval: See quiet_period.
        max_wait: See quiet_period.
        grace_period: See quiet_period.
        accept_unsafe_quiet_period: Passed to every rotation and retirement (see rotate-access-key).
        accounts: The AWS accounts to remediate (member accounts through KEYROTOR_ROLE_NAME); default: keyrotor's own.
        organization: Every ACTIVE account of the organization instead.
    """
    settings = AuditSettings.load()
    timings: dict[str, str | bool | None] = {
        "quiet_period": quiet_period,
        "poll_interval": poll_interval,
        "max_wait": max_wait,
        "grace_period": grace_period,
        "accept_unsafe_quiet_period": accept_unsafe_quiet_period,
    }
    audited = audit_accounts_task(settings, users or [], accounts or [], organization)
    plans = plan_remediation(audited, settings, max(1, max_concurrency))
    publish_audit_and_plan(audited, plans)
    exempt = [
        {"account_id": account, "user": e.user} for account, result in audited.results.items() for e in result.exempt
    ]
    report: dict[str, Any] = {"plans": [plan.to_json() for plan in plans], "exempt": exempt}
    not_audited = [
        {"account_id": account, "user": None, "action": "audit", "outcome": "not audited", "reason": reason}
        for account, reason in sorted(audited.failures.items())
    ]
    if dry_run:
        return report | {"dry_run": True, "not_audited": not_audited}
    outcomes = not_audited + remedy_users(plans, timings, settings.unused_days, max(1, max_concurrency))
    publish_outcome(outcomes)
    return report | {"outcomes": outcomes, "summary": dict(Counter(o["outcome"] for o in outcomes))}


@flow(name="remedy-users", persist_result=False)
def remedy_users(
    plans: list[UserPlan], timings: dict[str, str | bool | None], unused_days: int, max_concurrency: int = 4
) -> list[dict[str, Any]]:
    """Remedy each actionable user, at most ``max_concurrency`` at once, logging progress and failures.

    Each user's remedy is a flow run of its own, in this process or (when deployed) from its deployment, tagged
    ``remediation:<this run's name>`` so the UI lists them together. They are runs in their own right, not
    subflows: Prefect's subflow bookkeeping (a tracking task run and an API client per run) cost more than the
    rotation itself at fleet scale.
    """
    logger = get_run_logger()
    waiting_ones = (Action.NOTHING, Action.NEEDS_PERSON, Action.IN_PROGRESS)
    actionable = [plan for plan in plans if plan.action not in waiting_ones]
    outcomes = [
        {
            "account_id": plan.account_id,
            "user": plan.user,
            "action": plan.action.value,
            "outcome": _unacted(plan.action),
            "reason": plan.reason,
        }
        for plan in plans
        if plan not in actionable
    ]
    remedies = Remedies(rotate_access_key, retire_access_key).with_deployments()
    counts: Counter[str] = Counter()
    with (
        tags("keyrotor-remediation", f"remediation:{flow_run.get_name()}"),
        # No Prefect heartbeats for the users' runs in this process: the engine waits up to a second per run for
        # its heartbeat thread to stop, which a fleet pays per user; a crashed rotation is found by its Vault
        # lease. Set once here (the threads start from copies of this context): it rebuilds Prefect's settings.
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="keyrotor-user") as pool,
    ):
        futures = [
            pool.submit(detached_from_flow_run(remediate_user, plan, timings, unused_days, remedies))
            for plan in actionable
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            outcome = future.result()
            outcomes.append(outcome)
            if outcome["outcome"] == "failed":
                logger.warning("%s: %s failed: %s", outcome["user"], outcome["action"], outcome["reason"])
            counts[outcome["outcome"]] += 1
            progress = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            logger.info("Progress %d/%d: %s", done, len(futures), progress)
    return sorted(outcomes, key=lambda outcome: (outcome["account_id"] or "", outcome["user"]))


def _unacted(action: Action) -> str:
    return {Action.NEEDS_PERSON: "needs-a-person", Action.IN_PROGRESS: "in-progress"}.get(action, "unchanged")
