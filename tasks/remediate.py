"""Steps of fleet remediation: audit, plan, publish what was found and decided, remedy one user."""

from __future__ import annotations

from contextlib import suppress
from datetime import timedelta
from typing import Any

from prefect import Flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.context import TagsContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from keyrotor.audit import AuditResult
from keyrotor.audit_settings import AuditSettings
from keyrotor.connect import Connections
from keyrotor.credential_report import run_audit
from keyrotor.errors import KeyrotorError
from keyrotor.fleet import plan_fleet
from keyrotor.remediation import Action, UserPlan
from keyrotor.settings import Settings
from keyrotor.tasks import STEP


@task(name="audit-account", **STEP)
def audit_account_task(settings: AuditSettings, only_users: list[str]) -> AuditResult:
    """Audit the account (or the given users) from one credential report."""
    result = run_audit(settings, only_users, max_attempts=Settings().aws_max_attempts)
    get_run_logger().info(
        "Audit: %d users, %d findings, %d exempt; report generated %s",
        result.users,
        len(result.findings),
        len(result.exempt),
        result.generated_at.isoformat(),
    )
    return result


@task(name="plan-remediation", **STEP)
def plan_remediation(
    result: AuditResult, settings: AuditSettings, recent: timedelta, concurrency: int
) -> list[UserPlan]:
    """Re-read each flagged user's keys, Vault record and last use, and choose a remedy."""
    plans = plan_fleet(Connections.from_settings(Settings()), result, settings, recent, concurrency)
    counts: dict[str, int] = {}
    for plan in plans:
        counts[plan.action.value] = counts.get(plan.action.value, 0) + 1
    get_run_logger().info("Plan: %s", ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing")
    return plans


@task(name="publish-audit-and-plan", **STEP)
def publish_audit_and_plan(result: AuditResult, plans: list[UserPlan]) -> None:
    """The audit as a table and the plan as markdown, in the Prefect UI."""
    create_table_artifact(
        key="keyrotor-audit",
        table=[finding.to_json() | {"cis": ", ".join(str(ref) for ref in finding.cis)} for finding in result.findings]
        or [{"result": "compliant"}],
        description=f"Access-key audit of {result.users} users (report generated {result.generated_at.isoformat()})",
    )
    lines = ["# keyrotor remediation plan", "", "| user | action | key | keep | why |", "|---|---|---|---|---|"]
    lines += [f"| {p.user} | {p.action.value} | {p.key_id or ''} | {p.keep_key_id or ''} | {p.reason} |" for p in plans]
    lines += ["", f"Exempt: {', '.join(e.user for e in result.exempt) or 'none'}"]
    create_markdown_artifact(key="keyrotor-plan", markdown="\n".join(lines), description="What remediation does")


def remedies_deployed() -> set[str]:
    """Names of the remedy flows (rotation, retirement) that have a deployment on the Prefect server."""
    from keyrotor.flows.retire import retire_access_key
    from keyrotor.flows.rotate import rotate_access_key

    found = set()
    with get_client(sync_client=True) as client:
        for remedy in (rotate_access_key, retire_access_key):
            with suppress(ObjectNotFound):
                client.read_deployment_by_name(f"{remedy.name}/{remedy.name}")
                found.add(remedy.name)
    return found


def remediate_user(
    plan: UserPlan, timings: dict[str, str | bool | None], unused_days: int, deployed: set[str]
) -> dict[str, Any]:
    """Carry out one user's remedy as its own flow run; a failure is reported (never raised) with its reason.

    A plain function, not a task: the user's flow run is what shows (and can be paused or rolled back) in Prefect;
    the outcome names it (``flow_run_id``). ``deployed`` names the remedy flows to run from their deployments (see
    :func:`remedies_deployed`).
    """
    from keyrotor.flows.retire import retire_access_key
    from keyrotor.flows.rotate import rotate_access_key

    outcome: dict[str, Any] = {"user": plan.user, "action": plan.action.value, "reason": plan.reason}
    retire = {"user_name": plan.user, "key_id": plan.key_id, "keep_key_id": plan.keep_key_id} | timings
    try:
        if plan.action is Action.ROTATE:
            phase, run_id = _run_remedy(rotate_access_key, {"user_name": plan.user} | timings, deployed)
        elif plan.action is Action.RETIRE:
            phase, run_id = _run_remedy(retire_access_key, retire, deployed)
        elif plan.action is Action.DEACTIVATE_UNUSED:
            unused = retire | {"keep_key_id": None, "min_idle_days": unused_days, "quiet_period": "0s"}
            phase, run_id = _run_remedy(retire_access_key, unused, deployed)
        else:
            return outcome | {"outcome": "unchanged"}
    except Exception as error:  # noqa: BLE001 - one user's failure, whatever it is, never stops the others
        return outcome | {"outcome": "failed", "reason": f"{type(error).__name__}: {error}"}
    return outcome | {"outcome": phase, "flow_run_id": run_id}


def _run_remedy(
    flow_function: Flow[..., Any], parameters: dict[str, Any], deployed: set[str]
) -> tuple[str, str | None]:
    """Run the user's flow from its deployment when there is one (so it can be paused from the UI), else in process.

    Both carry the tags of the calling context. Returns the rotation's phase at the end of the run and the run's id.
    """
    if flow_function.name not in deployed:
        report = flow_function(**parameters)
        return str(report["phase"]), report.get("last_flow_run_id") or report.get("flow_run_id")
    name = f"{flow_function.name}/{flow_function.name}"
    run = run_deployment(
        name, parameters=parameters, timeout=None, poll_interval=1, tags=TagsContext.get().current_tags
    )
    if run.state is None or not run.state.is_completed():
        raise KeyrotorError(run.state.message if run.state else f"flow run {run.name} has no state")
    state = Connections.from_settings(Settings()).records(parameters["user_name"]).load_state()
    return (state.phase.value if state else "unknown"), str(run.id)


@task(name="publish-outcome", **STEP)
def publish_outcome(outcomes: list[dict[str, Any]]) -> None:
    """The outcome per user as a table in the Prefect UI."""
    create_table_artifact(
        key="keyrotor-remediation",
        table=outcomes or [{"result": "nothing to do"}],
        description="Outcome of the remediation, per user",
    )
