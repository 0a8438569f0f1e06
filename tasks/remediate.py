"""Steps of fleet remediation: audit, plan, publish what was found and decided, remedy one user."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TagsContext

from keyrotor.adapters.accounts import RoleToAssume
from keyrotor.adapters.connections import Connections
from keyrotor.adapters.credential_report import AccountsAudit, audit_accounts
from keyrotor.adapters.prefect_api import UserFlow, deployment_ids, run_here, start_run
from keyrotor.audit.settings import AuditSettings
from keyrotor.core.inputs import Request, RetirementRequest, RotationRequest, TimingFields
from keyrotor.core.naming import run_title, user_tags
from keyrotor.remediation.plan import Action, UserPlan
from keyrotor.remediation.survey import plan_accounts
from keyrotor.settings import Settings
from keyrotor.tasks import step


@step("audit-accounts")
def audit_accounts_task(
    settings: AuditSettings, only_users: list[str], accounts: list[str], organization: bool
) -> AccountsAudit:
    """Audit the accounts (or the caller's own), each from one credential report, reports generated together."""
    general = Settings()
    audited = audit_accounts(
        settings,
        only_users,
        general.aws_max_attempts,
        accounts=accounts,
        organization=organization,
        role=RoleToAssume(general.role_name, general.external_id),
        concurrency=general.account_concurrency,
    )
    logger = get_run_logger()
    for account, result in sorted(audited.results.items()):
        logger.info(
            "Audit of %s: %d users, %d findings, %d exempt; report generated %s",
            account,
            result.users,
            len(result.findings),
            len(result.exempt),
            result.generated_at.isoformat(),
        )
    for account, reason in sorted(audited.failures.items()):
        logger.warning("Account %s not audited: %s", account, reason)
    return audited


@step("plan-remediation")
def plan_remediation(audited: AccountsAudit, settings: AuditSettings, concurrency: int) -> list[UserPlan]:
    """Re-read each flagged user's keys, Vault record and last use (in its account), and choose a remedy."""
    plans = plan_accounts(Connections.from_settings(Settings()), audited, settings, concurrency)
    counts: dict[str, int] = {}
    for plan in plans:
        counts[plan.action.value] = counts.get(plan.action.value, 0) + 1
    get_run_logger().info("Plan: %s", ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing")
    return plans


@step("publish-audit-and-plan")
def publish_audit_and_plan(audited: AccountsAudit, plans: list[UserPlan]) -> None:
    """The audit as a table and the plan as markdown, in the Prefect UI."""
    rows = [
        {"account_id": account} | finding.to_json() | {"cis": ", ".join(str(ref) for ref in finding.cis)}
        for account, finding in audited.findings
    ]
    rows += [
        {"account_id": account, "result": f"not audited: {reason}"} for account, reason in audited.failures.items()
    ]
    users = sum(result.users for result in audited.results.values())
    create_table_artifact(
        key="keyrotor-audit",
        table=rows or [{"result": "compliant"}],
        description=f"Access-key audit of {users} users in {len(audited.results)} account(s)",
    )
    lines = [
        "# keyrotor remediation plan",
        "",
        "| account | user | action | key | keep | why |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p.account_id} | {p.user} | {p.action.value} | {p.key_id or ''} | {p.keep_key_id or ''} | {p.reason} |"
        for p in plans
    ]
    exempt = [f"{account}/{e.user}" for account, result in audited.results.items() for e in result.exempt]
    lines += ["", f"Exempt: {', '.join(exempt) or 'none'}"]
    create_markdown_artifact(key="keyrotor-plan", markdown="\n".join(lines), description="What remediation does")


@dataclass(frozen=True)
class Remedies:
    """The remedy flows (handed in by the remediation flow: steps never import flows) and which are deployed."""

    rotate: UserFlow
    retire: UserFlow
    deployed: frozenset[str] = frozenset()

    def with_deployments(self) -> Remedies:
        """These remedies, knowing which of them the Prefect server has a deployment of."""
        names = {remedy.name: f"{remedy.name}/{remedy.name}" for remedy in (self.rotate, self.retire)}
        found = deployment_ids(list(names.values()))
        return dataclasses.replace(self, deployed=frozenset(name for name, full in names.items() if full in found))


def remedy_request(plan: UserPlan, timings: TimingFields, unused_days: int) -> Request | None:
    """The request that carries out a user's plan (None: nothing to do), with the remediation's timings."""
    who = {"user_name": plan.user, "account_id": plan.account_id or ""} | timings.timing_fields()
    if plan.action is Action.ROTATE:
        return RotationRequest.model_validate(who)
    retire = who | {"key_id": plan.key_id, "keep_key_id": plan.keep_key_id or ""}
    if plan.action is Action.RETIRE:
        return RetirementRequest.model_validate(retire)
    if plan.action is Action.DEACTIVATE_UNUSED:  # already unused for unused_days: no quiet wait from now
        unused = retire | {"keep_key_id": "", "min_idle_days": unused_days, "quiet_period": timedelta(0)}
        return RetirementRequest.model_validate(unused | {"accept_unsafe_quiet_period": True})
    return None


@dataclass(frozen=True)
class Remedy:
    """One user's remedy: what it was, and how it went (``started``, ``already started``, a phase, ``failed``)."""

    plan: UserPlan
    outcome: str
    reason: str = ""
    flow_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.plan.account_id,
            "user": self.plan.user,
            "action": self.plan.action.value,
            "outcome": self.outcome,
            "reason": self.reason or self.plan.reason,
            **({"flow_run_id": self.flow_run_id} if self.flow_run_id else {}),
        }


def remediate_user(plan: UserPlan, timings: TimingFields, unused_days: int, remedies: Remedies) -> Remedy:
    """Start (or, without deployments, carry out) one user's remedy as its own flow run; a failure is reported
    (never raised) with its reason.

    A plain function, not a task: the user's flow run is what shows (and can be paused or rolled back) in Prefect;
    the outcome names it. With a deployment the run is only started: it works on a runner or worker and holds
    nothing while it waits, and this returns at once (outcome ``started``).
    """
    try:
        request = remedy_request(plan, timings, unused_days)
        if request is None:
            return Remedy(plan, "unchanged")
        remedy = remedies.rotate if plan.action is Action.ROTATE else remedies.retire
        outcome, run_id = _run_remedy(remedy, request, remedies, plan)
    except Exception as error:  # noqa: BLE001 - one user's failure, whatever it is, never stops the others
        return Remedy(plan, "failed", f"{type(error).__name__}: {error}")
    return Remedy(plan, outcome, flow_run_id=run_id)


def _run_remedy(remedy: UserFlow, request: Request, remedies: Remedies, plan: UserPlan) -> tuple[str, str | None]:
    """Start the user's flow from its deployment when there is one (so it can be paused from the UI, and waits
    without a process), else run it in this process. Both carry the tags of the calling context.

    Returns the outcome (the phase at the end of an in-process run; ``started`` or ``already started`` for a
    deployment run) and the run's id. Starting is idempotent per user, action and key: a second remediation while
    the first one's run has not ended finds that run instead of starting another (its tags name the remediation
    that created it).
    """
    if remedy.name not in remedies.deployed:
        record = run_here(remedy, request)
        return record.phase.value, record.last_flow_run_id or record.flow_run_id
    ours = [*TagsContext.get().current_tags, *user_tags(plan.user, plan.account_id)]
    run = start_run(
        f"{remedy.name}/{remedy.name}",
        {"request": request.model_dump(mode="json")},
        sorted(set(ours)),
        idempotency_key=f"remedy:{plan.account_id}:{plan.user}:{plan.action.value}:{plan.key_id}",
        flow_run_name=_remedy_name(plan),
    )
    return ("started" if set(ours) <= set(run.tags) else "already started"), str(run.id)


def _remedy_name(plan: UserPlan) -> str:
    if plan.action is Action.ROTATE:
        return run_title("rotate", plan.user, plan.account_id)
    return run_title("retire", plan.user, plan.account_id, plan.key_id)


@step("publish-outcome")
def publish_outcome(outcomes: list[dict[str, Any]]) -> None:
    """The outcome per user as a table in the Prefect UI."""
    create_table_artifact(
        key="keyrotor-remediation",
        table=outcomes or [{"result": "nothing to do"}],
        description="Outcome of the remediation, per user",
    )
