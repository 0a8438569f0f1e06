"""``keyrotor remediate`` and ``keyrotor fleet-status``: a whole account (or organization) at once."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table

from keyrotor.cli.common import (
    GRACE,
    JSON,
    MAX_WAIT,
    POLL,
    QUIET,
    UNSAFE,
    err,
    fail,
    out,
    printed_json,
    start_prefect,
)
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.model import Phase


def remediate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")] = False,
    max_concurrency: Annotated[int, typer.Option(min=1, max=64, help="Most users remedied at once.")] = 4,
    user: Annotated[
        list[str] | None, typer.Option("--user", metavar="GLOB", help="Only these users (globs; repeatable).")
    ] = None,
    quiet_period: Annotated[str | None, typer.Option(help=QUIET)] = None,
    poll_interval: Annotated[str | None, typer.Option(help=POLL)] = None,
    max_wait: Annotated[str | None, typer.Option(help=MAX_WAIT)] = None,
    grace_period: Annotated[str | None, typer.Option(help=GRACE)] = None,
    accept_unsafe_quiet_period: Annotated[bool, typer.Option(help=UNSAFE)] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="With served deployments: follow the remedies until each has ended.")
    ] = False,
    account: Annotated[
        list[str] | None, typer.Option("--account", metavar="ID", help="Remedy this account (repeatable).")
    ] = None,
    organization: Annotated[
        bool, typer.Option("--organization", help="Remedy every ACTIVE account of the organization.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Audit the account(s) and remedy every flagged user, printing the plan before anything changes.

    Old key: rotate it. Two active keys: keep the one in Vault (else the one used most recently) and retire the
    other through the quiet wait, deactivation and grace-period deletion; both in recent use and neither in Vault:
    "needs a person", nothing changes. Unused key: deactivate it after confirming it is still unused, delete it
    after the grace period. Exempt users, and users whose rotation is already in progress: nothing.

    Each user's remedy is its own Prefect flow run. When the rotate-access-key and retire-access-key deployments
    exist (`keyrotor serve`, or workers), the remedies are started there and this command returns at once (they
    wait without holding a process; `keyrotor fleet-status` follows them; `--wait` follows them here). Without
    them, they run in this process, at most --max-concurrency at once, and the command returns when all have ended.
    With --account (repeatable) or --organization, every account is audited and remedied (a member account
    through KEYROTOR_ROLE_NAME); an account that cannot be audited is reported and stops no other.
    Exit status: 0 all started or done (or dry run), 1 some user failed or needs a person, or an account was not
    audited; 2+ errors as for rotate.
    """
    from keyrotor.adapters.accounts import RoleToAssume
    from keyrotor.adapters.connections import Connections
    from keyrotor.adapters.credential_report import audit_accounts
    from keyrotor.audit.settings import AuditSettings
    from keyrotor.core.inputs import Origin, RemediationRequest, TimingFields, check_quiet_period
    from keyrotor.remediation.survey import plan_accounts
    from keyrotor.settings import Settings

    given = {
        "quiet_period": quiet_period,
        "poll_interval": poll_interval,
        "max_wait": max_wait,
        "grace_period": grace_period,
    }
    try:
        rotation_settings = Settings()
        timings = TimingFields.timing_values(rotation_settings.timings, accept_unsafe_quiet_period)
        values = timings | {name: value for name, value in given.items() if value is not None}
        values |= {"max_concurrency": max_concurrency, "users": user or [], "accounts": account or []}
        request: RemediationRequest = RemediationRequest.parse(values | {"organization": organization}, Origin.CLI)
        accepted = accept_unsafe_quiet_period or rotation_settings.accept_unsafe_quiet_period
        check_quiet_period(
            request.quiet_period, real_aws=rotation_settings.real_aws, accepted=accepted, origin=Origin.CLI
        )
        start_prefect()
        settings = AuditSettings.load()
        audited = audit_accounts(
            settings,
            request.users,
            rotation_settings.aws_max_attempts,
            accounts=request.accounts,
            organization=organization,
            role=RoleToAssume(rotation_settings.role_name, rotation_settings.external_id),
            concurrency=rotation_settings.account_concurrency,
        )
        plans = plan_accounts(Connections.from_settings(), audited, settings, max_concurrency)
    except KeyrotorError as error:
        fail(error, as_json)
        return
    exempt = [f"{acct}/{e.user}" for acct, result in audited.results.items() for e in result.exempt]
    if not as_json:
        _print_plan(plans, exempt)
        for acct, reason in sorted(audited.failures.items()):
            err.print(f"[bold red]account {acct} not audited:[/] {reason}", highlight=False)
    if dry_run:
        if as_json:
            from keyrotor.flows.remediate import RemediationReport

            pairs = [(acct, e.user) for acct, result in audited.results.items() for e in result.exempt]
            report = RemediationReport(plans, pairs, dict(sorted(audited.failures.items())), dry_run=True)
            printed_json(report, as_json)
        if audited.failures:
            raise typer.Exit(1)
        return
    from keyrotor.flows.remediate import audit_and_remediate

    planned = sorted({plan.user for plan in plans})
    if not planned:
        out.print("Nothing to remedy.")
        if audited.failures:
            raise typer.Exit(1)
        return
    # The flow audits again (live, right before acting), only the planned users, only the accounts audited.
    narrowed = request.model_copy(update={"users": planned, "accounts": sorted(audited.results)})
    outcome = audit_and_remediate(narrowed).to_json()
    _report_outcome(outcome, wait, as_json)


def _report_outcome(report: dict[str, Any], wait: bool, as_json: bool) -> None:
    """Follow the started remedies (``--wait``), print the outcome, and exit 1 when a user needs a person."""
    started = {
        (o["account_id"], o["user"]): o["flow_run_id"]
        for o in report["outcomes"]
        if o["outcome"] in ("started", "already started")
    }
    if wait and started:
        from keyrotor.adapters.connections import Connections
        from keyrotor.adapters.prefect_runs import PrefectRuns
        from keyrotor.control.follow import follow_fleet

        finals = follow_fleet(
            Connections.from_settings(), PrefectRuns(), started, progress=lambda line: err.print(f"  {line}")
        )
        for outcome in report["outcomes"]:
            if (outcome["account_id"], outcome["user"]) in started:
                state = finals.get((outcome["account_id"], outcome["user"]))
                outcome["outcome"] = state.phase.value if state else "failed"
                if state is not None and state.error:
                    outcome["reason"] = state.error
        report["summary"] = dict(Counter(o["outcome"] for o in report["outcomes"]))
    if as_json:
        print(json.dumps(report, default=str))
    else:
        table = Table("account", "user", "action", "outcome", "reason", title="remediation outcome")
        for outcome in report["outcomes"]:
            table.add_row(
                outcome.get("account_id") or "",
                outcome["user"] or "",
                outcome["action"],
                outcome["outcome"],
                outcome.get("reason", ""),
            )
        out.print(table)
        out.print(f"summary: {report['summary']}")
        if started and not wait:
            out.print("The remedies run on the Prefect server; follow them with `keyrotor fleet-status`.")
    if any(o["outcome"] in ("failed", "needs-a-person", "rejected", "not audited") for o in report["outcomes"]):
        raise typer.Exit(1)


def _print_plan(plans: list[Any], exempt: list[str]) -> None:
    table = Table("account", "user", "rules", "action", "key", "keep", "why", title="remediation plan")
    for plan in plans:
        table.add_row(
            plan.account_id or "",
            plan.user,
            ", ".join(plan.rules),
            plan.action.value,
            plan.key_id or "",
            plan.keep_key_id or "",
            plan.reason,
        )
    out.print(table)
    out.print(f"exempt (left alone): {', '.join(exempt) or 'none'}")


def fleet_status(
    user: Annotated[
        list[str] | None, typer.Option("--user", metavar="GLOB", help="Only these users (globs; repeatable).")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also list rotations that ended well.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """The progress of every rotation in the account, from Vault's records: counts per status, who waits on what
    and until when, who needs a person, who failed and why. Read-only.
    """
    from keyrotor.adapters.connections import Connections
    from keyrotor.control import fleet_status as fleet
    from keyrotor.core.timestamps import utcnow

    try:
        entries = fleet.gather(Connections.from_settings(), tuple(user or ()))
    except KeyrotorError as error:
        fail(error, as_json)
        return
    totals = fleet.summary(entries)
    if as_json:
        print(json.dumps({"summary": totals, "rotations": [item.to_json() for item in entries]}, default=str))
        return
    counts = ", ".join(f"{n} {status}" for status, n in totals["counts"].items()) or "no rotations recorded"
    out.print(f"{totals['users']} users at {utcnow().isoformat(timespec='seconds')}: {counts}", highlight=False)
    table = Table("user", "status", "waiting for", "next", title="rotations")
    for item in entries:
        needs = item.view.outlook.needs_person or item.overdue is not None
        if show_all or not item.state.phase.terminal or needs or item.state.phase is Phase.FAILED:
            table.add_row(item.user, item.status, item.waiting_for, item.view.outlook.command)
    out.print(table)
    if totals["needs_person"]:
        out.print(f"need a person: {', '.join(totals['needs_person'])}", highlight=False)
    if totals["overdue"]:
        out.print(f"checks overdue (is a waker running?): {', '.join(totals['overdue'])}", highlight=False)
