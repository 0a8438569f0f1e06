"""``audit-and-remediate``: audit the account and remedy every flagged user, each in its own flow run.

Each user's remedy (a rotation, or the retirement of a key) is its own flow run, so each can be paused,
resumed or rolled back alone; at most ``max_concurrency`` run at once; one user's failure never stops the others.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from keyrotor.adapters.prefect_api import detached_from_flow_run
from keyrotor.audit.settings import AuditSettings
from keyrotor.core.inputs import RemediationRequest, TimingFields
from keyrotor.flows.retire import retire_access_key
from keyrotor.flows.rotate import rotate_access_key
from keyrotor.remediation.plan import Action, UserPlan
from keyrotor.tasks.remediate import (
    Remedies,
    Remedy,
    audit_accounts_task,
    plan_remediation,
    publish_audit_and_plan,
    publish_outcome,
    remediate_user,
)

#: What the daily schedule runs: the whole account, with the real-AWS timings.
WHOLE_ACCOUNT = RemediationRequest()


@flow(name="audit-and-remediate", persist_result=False, validate_parameters=True)
def audit_and_remediate(request: RemediationRequest = WHOLE_ACCOUNT) -> RemediationReport:
    """Audit, publish the findings and the plan, then (unless a dry run) remedy each flagged user.

    Args:
        request: Which users and accounts, the timings of every rotation and retirement, and how many at once.
    """
    settings = AuditSettings.load()
    concurrency = request.max_concurrency
    audited = audit_accounts_task(settings, request.users, request.accounts, request.organization)
    plans = plan_remediation(audited, settings, concurrency)
    publish_audit_and_plan(audited, plans)
    exempt = [(account, e.user) for account, result in audited.results.items() for e in result.exempt]
    report = RemediationReport(plans, exempt, dict(sorted(audited.failures.items())), dry_run=request.dry_run)
    if request.dry_run:
        return report
    report.remedies.extend(remedy_users(plans, request, settings.unused_days, concurrency))
    publish_outcome(report.outcomes())
    return report


@dataclass
class RemediationReport:
    """What a remediation planned and did: the plan per user, the exempt users, the accounts not audited and why,
    and each user's remedy (none for a dry run)."""

    plans: list[UserPlan]
    exempt: list[tuple[str, str]]
    not_audited: dict[str, str]
    dry_run: bool = False
    remedies: list[Remedy] = field(default_factory=list)

    def outcomes(self) -> list[dict[str, Any]]:
        """Each user's outcome (and each account not audited), as the CLI and the artifact show them."""
        failures = [
            {"account_id": account, "user": None, "action": "audit", "outcome": "not audited", "reason": reason}
            for account, reason in self.not_audited.items()
        ]
        remedies = sorted(
            (remedy.to_json() for remedy in self.remedies), key=lambda o: (o["account_id"] or "", o["user"])
        )
        return failures + remedies

    def to_json(self) -> dict[str, Any]:
        plans = [plan.to_json() for plan in self.plans]
        exempt = [{"account_id": account, "user": user} for account, user in self.exempt]
        if self.dry_run:
            not_audited = [{"account_id": a, "reason": r} for a, r in self.not_audited.items()]
            return {"dry_run": True, "plans": plans, "exempt": exempt, "not_audited": not_audited}
        outcomes = self.outcomes()
        summary = dict(Counter(o["outcome"] for o in outcomes))
        return {"plans": plans, "exempt": exempt, "outcomes": outcomes, "summary": summary}


@flow(name="remedy-users", persist_result=False)
def remedy_users(
    plans: list[UserPlan], timings: TimingFields, unused_days: int, max_concurrency: int = 4
) -> list[Remedy]:
    """Remedy each actionable user, at most ``max_concurrency`` at once, logging progress and failures.

    Each user's remedy is a flow run of its own, in this process or (when deployed) from its deployment, tagged
    ``remediation:<this run's name>`` so the UI lists them together. They are runs in their own right, not
    subflows: Prefect's subflow bookkeeping (a tracking task run and an API client per run) cost more than the
    rotation itself at fleet scale.
    """
    logger = get_run_logger()
    waiting_ones = (Action.NOTHING, Action.NEEDS_PERSON, Action.IN_PROGRESS)
    actionable = [plan for plan in plans if plan.action not in waiting_ones]
    remedies = [Remedy(plan, _unacted(plan.action)) for plan in plans if plan not in actionable]
    flows = Remedies(rotate_access_key, retire_access_key).with_deployments()
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
            pool.submit(detached_from_flow_run(remediate_user, plan, timings, unused_days, flows))
            for plan in actionable
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            remedy = future.result()
            remedies.append(remedy)
            if remedy.outcome == "failed":
                logger.warning("%s: %s failed: %s", remedy.plan.user, remedy.plan.action.value, remedy.reason)
            counts[remedy.outcome] += 1
            progress = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            logger.info("Progress %d/%d: %s", done, len(futures), progress)
    return remedies


def _unacted(action: Action) -> str:
    return {Action.NEEDS_PERSON: "needs-a-person", Action.IN_PROGRESS: "in-progress"}.get(action, "unchanged")
