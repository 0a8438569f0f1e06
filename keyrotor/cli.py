"""The ``keyrotor`` command line."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from keyrotor import audit_cli
from keyrotor.errors import KeyrotorError
from keyrotor.model import Phase
from keyrotor.stack.cli import stack_app

# Without PREFECT_API_URL, Prefect starts a temporary local server; its first start (database migrations)
# can take longer than Prefect's 20 s default on a small machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Prefect's client retries a server it cannot reach with backoffs of 2, 4, 8... s: 5 retries give up after about a
# minute, 7 ride out an outage of 2 to 4 minutes (keyrotor serve's flow runs inherit this environment).
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "7")

app = typer.Typer(
    name="keyrotor",
    help=(
        "Rotate AWS IAM access keys without breaking the applications that use them.\n\n"
        "A rotation creates a new key, verifies it, publishes it to Vault (KV v2), waits until the old key "
        "has gone unused, deactivates it, and deletes it after a grace period. It is a resumable Prefect flow: "
        "run the same command again after any interruption and it continues where it stopped."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(stack_app, name="stack", help="Start, stop and inspect the local stack (moto IAM/STS, OpenBao, Prefect).")

out = Console()
err = Console(stderr=True)

QUIET = "How long the old key must go unused after the new key is published, e.g. 90s, 15m, 24h, 7d. [env: KEYROTOR_QUIET_PERIOD; default 1d]"
POLL = "How often the old key's last use is checked while waiting. [env: KEYROTOR_POLL_INTERVAL; default 15m]"
MAX_WAIT = (
    "Stop waiting after this long: both keys then stay active and you decide. [env: KEYROTOR_MAX_WAIT; default 7d]"
)
GRACE = "Keep the deactivated old key this long before deleting it; 0s deletes at once. [env: KEYROTOR_GRACE_PERIOD; default 7d]"
APPROVAL = (
    "Before deactivating the old key, wait for an operator's approval: a form in the Prefect UI shows the last-used "
    "evidence (or answer with `keyrotor resume USER --approve/--reject`)."
)
JSON = "Print one JSON object on stdout for scripts (logs still go to stderr)."
UNSAFE = (
    "Allow a quiet period of 0s, or on real AWS one shorter than the 4h AWS may take to record a key's last use: "
    "the old key may be deactivated while applications still use it. [env: KEYROTOR_ACCEPT_UNSAFE_QUIET_PERIOD]"
)
FORCE = "Rotate even if keyrotor's last rotation created the current key moments ago (within KEYROTOR_ROTATION_COOLDOWN, default 1d)."


def _fail(error: KeyrotorError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": type(error).__name__, "message": str(error), "exit_code": error.exit_code}))
    err.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(error.exit_code)


ACCOUNT = (
    "The AWS account of the user (12 digits); keyrotor enters a member account by assuming KEYROTOR_ROLE_NAME "
    "(default OrganizationAccountAccessRole). Default: the account of keyrotor's own credentials."
)
AccountOption = Annotated[str | None, typer.Option("--account", metavar="ID", help=ACCOUNT)]


def _connections(account: str | None, purpose: str) -> Any:
    """The connections in the user's account (checked as an account id first: bad input is exit 2)."""
    from keyrotor.accounts import check_account_id
    from keyrotor.connect import Connections

    return Connections.from_settings().for_account(check_account_id(account) if account else None, purpose)


LOCAL = (
    "Run the rotation in this process even if a Prefect server serves the deployments (it then waits here, polling, "
    "until the old key is quiet)."
)
WAIT = "With a served deployment: follow the rotation to its end instead of returning once the new key is published."


@app.command()
def rotate(
    user: Annotated[str, typer.Argument(help="The IAM user whose access key to rotate.")],
    quiet_period: Annotated[str | None, typer.Option(help=QUIET)] = None,
    poll_interval: Annotated[str | None, typer.Option(help=POLL)] = None,
    max_wait: Annotated[str | None, typer.Option(help=MAX_WAIT)] = None,
    grace_period: Annotated[str | None, typer.Option(help=GRACE)] = None,
    require_approval: Annotated[bool, typer.Option(help=APPROVAL)] = False,
    accept_unsafe_quiet_period: Annotated[bool, typer.Option(help=UNSAFE)] = False,
    force: Annotated[bool, typer.Option(help=FORCE)] = False,
    account: AccountOption = None,
    local: Annotated[bool, typer.Option("--local", help=LOCAL)] = False,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT)] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Rotate USER's access key, or continue the rotation in progress.

    Against a Prefect server whose rotate-access-key deployment is served (`keyrotor serve`, or a worker), the
    rotation runs there: this command returns once the new key is published, printing what happens next and when
    (`--wait` follows it to the end); while the old key is still in use the rotation holds no process. Without one
    (no PREFECT_API_URL, or --local) it runs in this process, which stays until the rotation ends.

    Exit status: 0 the new key is published and the rotation waits for the old key to go quiet (on a server), or
    the old key is deleted, or deactivated with its deletion scheduled; 2 bad input; 3 precondition failed (no such
    user, two active keys...); 4 another run holds the rotation, or it was just rotated; 5 the new key never
    verified; 6 the old key was still in use at max-wait (both keys left active); 7 Vault error; 8 AWS error;
    9 Prefect server unreachable, or nothing runs its deployments.
    """
    from keyrotor.durations import format_duration
    from keyrotor.inputs import check_quiet_period, check_user_name, resolve_timings
    from keyrotor.settings import Settings

    parameters: dict[str, Any] = {
        "user_name": user,
        "quiet_period": quiet_period,
        "poll_interval": poll_interval,
        "max_wait": max_wait,
        "grace_period": grace_period,
        "require_approval": require_approval,
        "accept_unsafe_quiet_period": accept_unsafe_quiet_period,
        "force": force,
        "account_id": account,
    }
    try:
        check_user_name(user)
        if account:
            from keyrotor.accounts import check_account_id

            check_account_id(account)
        settings = Settings()
        timings = resolve_timings(settings, quiet_period, poll_interval, max_wait, grace_period)
        accepted = accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
        check_quiet_period(timings.quiet_period, real_aws=settings.real_aws, accepted=accepted)
        _start_prefect()
        from keyrotor.deployments.table import ROTATE
        from keyrotor.prefect_api import served, server_name

        if not local and served(ROTATE.full_name):
            _rotate_on_server(user, parameters, wait, as_json)
            return
        where = "--local" if local else f"no runner serves {ROTATE.name} on {server_name()}"
        err.print(
            f"Rotating in this process ({where}): it stays until the old key has been unused for "
            f"{format_duration(timings.quiet_period)} (at most {format_duration(timings.max_wait)}). Serve the "
            "deployments (`keyrotor serve`) to let rotations wait without a process.",
            highlight=False,
        )
        from prefect import tags

        from keyrotor.flows.rotate import rotate_access_key
        from keyrotor.tasks.report import user_tags

        with tags("keyrotor", *user_tags(user, account)):
            report = rotate_access_key(**parameters)
    except KeyrotorError as error:
        _fail(error, as_json)
        return
    _print_report(report, as_json)


def settings_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _rotate_on_server(user: str, parameters: dict[str, Any], to_the_end: bool, as_json: bool) -> None:
    """Start the rotation as a run of the served deployment, follow it, and print where it stands."""
    from keyrotor.connect import Connections
    from keyrotor.deployments.table import ROTATE
    from keyrotor.follow import follow
    from keyrotor.model import utcnow
    from keyrotor.outlook import outlook
    from keyrotor.prefect_api import start_run
    from keyrotor.tasks.report import user_tags

    connections = Connections.from_settings().for_account(parameters.get("account_id"), f"follow-{user}")
    run = start_run(ROTATE.full_name, parameters, ["keyrotor", *user_tags(user, connections.account_id)])
    api = settings_api_url() or ""
    err.print(f"Started flow run {run.name} ({api.removesuffix('/api')}/runs/flow-run/{run.id})", highlight=False)
    followed = follow(
        connections, user, str(run.id), to_the_end=to_the_end, progress=lambda line: err.print(f"  {line}")
    )
    state = followed.state
    parked = connections.waiting.read(connections.account_id, user)
    next_check = parked.next_check_at if parked is not None and followed.stopped_because == "parked" else None
    view = outlook(state, user, utcnow(), next_check_at=next_check)
    report = (state.report() if state else {"phase": None}) | {"flow_run_id": str(run.id), "outlook": view.to_json()}
    if as_json:
        print(json.dumps(report, default=str))
    else:
        if state is not None:
            _print_rotation(report)
        out.print(f"doing: {view.doing}", highlight=False)
        out.print(f"waiting for: {view.waiting_for}", highlight=False)
        if view.command:
            out.print(f"next: {view.command}", highlight=False)
    if state is None or (
        followed.stopped_because == "ended" and state.phase not in (Phase.COMPLETED, Phase.DEACTIVATED)
    ):
        raise typer.Exit(1)


def _start_prefect() -> None:
    """Start Prefect's temporary server (when there is no PREFECT_API_URL) before any flow runs, one at a time."""
    from keyrotor.prefect_api import prefect_call, start_temporary_server

    with prefect_call("start Prefect's temporary local server"):
        start_temporary_server()


@app.command()
def finish(
    user: Annotated[str, typer.Argument(help="The IAM user whose deactivated old key is due for deletion.")],
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Delete USER's deactivated old key now that its grace period is over (what the scheduled run does)."""
    from keyrotor.flows.delete_old_key import delete_old_key_after_grace

    _run_flow(delete_old_key_after_grace, user, account, as_json, (Phase.COMPLETED,))


@app.command()
def rollback(
    user: Annotated[str, typer.Argument(help="The IAM user whose rotation to undo.")],
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Roll USER back to the old key: reactivate it, restore the previous secret in Vault, deactivate the new key.

    Also cancels the scheduled deletion and a paused run. Possible until the old key is deleted; after that it
    says so and changes nothing. Safe to run again.
    """
    from keyrotor.flows.rollback import rollback_rotation

    _run_flow(rollback_rotation, user, account, as_json, (Phase.ROLLED_BACK,))


@app.command()
def pause(
    user: Annotated[str, typer.Argument(help="The IAM user whose rotation to pause.")],
    account: AccountOption = None,
) -> None:
    """Pause USER's rotation, in any phase, like the Prefect UI's Pause: its flow run is suspended, holds no
    process, and waits (with no timeout) until `keyrotor resume USER` or the UI's Resume.

    Works for rotations running from a deployment (served or on a worker), also while they wait for the old key
    to go quiet. A paused rotation still blocks other rotations of USER and can be rolled back.
    """
    from keyrotor.inputs import check_user_name
    from keyrotor.operate import pause_rotation

    try:
        check_user_name(user)
        run_id = pause_rotation(_connections(account, f"pause-{user}"), user)
    except KeyrotorError as error:
        _fail(error, False)
        return
    out.print(f"Paused the rotation of {user} (flow run {run_id}); no process holds it now.")


@app.command()
def resume(
    user: Annotated[str, typer.Argument(help="The IAM user whose paused rotation to resume.")],
    approve: Annotated[
        bool | None,
        typer.Option("--approve/--reject", help="The answer for a rotation waiting for approval to deactivate."),
    ] = None,
    note: Annotated[str, typer.Option(help="Why, with --approve/--reject (kept in the rotation's state).")] = "",
    account: AccountOption = None,
) -> None:
    """Resume USER's paused rotation: Prefect reschedules the flow run and it continues where it stopped."""
    from keyrotor.inputs import check_user_name
    from keyrotor.operate import resume_rotation

    answer = None if approve is None else {"approve": approve, "note": note}
    try:
        check_user_name(user)
        run_id = resume_rotation(_connections(account, f"resume-{user}"), user, answer)
    except KeyrotorError as error:
        _fail(error, False)
        return
    out.print(f"Resumed the rotation of {user} (flow run {run_id}); it continues on the serve process or worker.")


@app.command()
def status(
    user: Annotated[str, typer.Argument(help="The IAM user to look at.")],
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Show USER's keys with their last use, the key published in Vault, the rotation's phase and what happens next.

    Read-only: it changes nothing in IAM or Vault.
    """
    from keyrotor.inputs import check_user_name
    from keyrotor.status import user_status

    try:
        check_user_name(user)
        report = user_status(_connections(account, f"status-{user}"), user)
    except KeyrotorError as error:
        _fail(error, as_json)
        return
    if as_json:
        print(json.dumps(report, default=str))
        return
    _print_status(report)


@app.command()
def demo(
    stack_dir: Annotated[Path, typer.Option(help="Where the local stack keeps its state and logs.")] = Path(".stack"),
    moto_port: Annotated[int, typer.Option(help="moto's port (0: any free port).")] = 5000,
    vault_port: Annotated[int, typer.Option(help="OpenBao's port (0: any free port).")] = 8200,
    prefect_port: Annotated[int, typer.Option(help="Prefect server's port (0: any free port).")] = 4200,
    stop: Annotated[
        bool, typer.Option("--stop/--keep", help="Stop the stack at the end (default: keep it for the UI).")
    ] = False,
) -> None:
    """Start the local stack and rotate three demo users while simulated applications keep calling AWS.

    Ends with a table of what happened (keys, phases, times, application errors) and the Prefect UI's address.
    """
    from keyrotor.demo import run_demo
    from keyrotor.stack.services import StackPorts

    if not run_demo(stack_dir, StackPorts(moto_port, vault_port, prefect_port), stop, out):
        raise typer.Exit(1)


@app.command()
def remediate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")] = False,
    max_concurrency: Annotated[int, typer.Option(min=1, max=64, help="Most users remedied at once.")] = 4,
    user: Annotated[list[str] | None, typer.Option("--user", help="Only these users (globs; repeatable).")] = None,
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
    from keyrotor.accounts import RoleToAssume
    from keyrotor.audit_settings import AuditSettings
    from keyrotor.connect import Connections
    from keyrotor.credential_report import audit_accounts
    from keyrotor.fleet import plan_accounts
    from keyrotor.inputs import check_quiet_period, resolve_timings
    from keyrotor.settings import Settings

    try:
        rotation_settings = Settings()
        _start_prefect()
        timings = resolve_timings(rotation_settings, quiet_period, poll_interval, max_wait, grace_period)
        accepted = accept_unsafe_quiet_period or rotation_settings.accept_unsafe_quiet_period
        check_quiet_period(timings.quiet_period, real_aws=rotation_settings.real_aws, accepted=accepted)
        settings = AuditSettings.load()
        audited = audit_accounts(
            settings,
            user or (),
            rotation_settings.aws_max_attempts,
            accounts=account or (),
            organization=organization,
            role=RoleToAssume(rotation_settings.role_name, rotation_settings.external_id),
            concurrency=rotation_settings.account_concurrency,
        )
        plans = plan_accounts(Connections.from_settings(), audited, settings, timedelta(days=1), max_concurrency)
    except KeyrotorError as error:
        _fail(error, as_json)
        return
    exempt = [{"account_id": acct, "user": e.user} for acct, result in audited.results.items() for e in result.exempt]
    if not as_json:
        _print_plan(plans, [f"{e['account_id']}/{e['user']}" for e in exempt])
        for acct, reason in sorted(audited.failures.items()):
            err.print(f"[bold red]account {acct} not audited:[/] {reason}", highlight=False)
    if dry_run:
        if as_json:
            not_audited = [{"account_id": a, "reason": r} for a, r in sorted(audited.failures.items())]
            plan_json = [p.to_json() for p in plans]
            print(json.dumps({"dry_run": True, "plans": plan_json, "exempt": exempt, "not_audited": not_audited}))
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
    report = audit_and_remediate(
        max_concurrency=max_concurrency,
        users=planned,
        quiet_period=quiet_period,
        poll_interval=poll_interval,
        max_wait=max_wait,
        grace_period=grace_period,
        accept_unsafe_quiet_period=accept_unsafe_quiet_period,
        accounts=sorted(audited.results),
    )
    started = {
        (o["account_id"], o["user"]): o["flow_run_id"]
        for o in report["outcomes"]
        if o["outcome"] in ("started", "already started")
    }
    if wait and started:
        from keyrotor.follow import follow_fleet

        finals = follow_fleet(Connections.from_settings(), started, progress=lambda line: err.print(f"  {line}"))
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


@app.command()
def serve(
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most flow runs working at once; waiting ones hold none. [env: KEYROTOR_SERVE_LIMIT; default 4]"
        ),
    ] = None,
    wake: Annotated[
        bool, typer.Option("--wake/--no-wake", help="Also be a waker: resume parked rotations when their key is quiet.")
    ] = True,
) -> None:
    """Serve keyrotor's deployments to the Prefect server in PREFECT_API_URL, and wake parked rotations.

    Runs until interrupted. Flow runs started from the Prefect UI, by `keyrotor rotate` and `keyrotor remediate`,
    and scheduled deletions of old keys, run here, each in a process of its own, at most --limit at once. Run it on
    several machines to share the work: one of them at a time is the waker (a lease in Vault decides).
    """
    from keyrotor.deployments.serve import serve_all
    from keyrotor.settings import Settings

    serve_all(limit=limit or Settings().serve_limit, wake=wake)


@app.command(name="fleet-status")
def fleet_status(
    user: Annotated[list[str] | None, typer.Option("--user", help="Only these users (globs; repeatable).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also list rotations that ended well.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """The progress of every rotation in the account, from Vault's records: counts per status, who waits on what
    and until when, who needs a person, who failed and why. Read-only.
    """
    from keyrotor import fleet_status as fleet
    from keyrotor.connect import Connections
    from keyrotor.model import utcnow

    try:
        entries = fleet.gather(Connections.from_settings(), tuple(user or ()))
    except KeyrotorError as error:
        _fail(error, as_json)
        return
    totals = fleet.summary(entries)
    if as_json:
        print(json.dumps({"summary": totals, "rotations": [item.to_json() for item in entries]}, default=str))
        return
    counts = ", ".join(f"{n} {status}" for status, n in totals["counts"].items()) or "no rotations recorded"
    out.print(f"{totals['users']} users at {utcnow().isoformat(timespec='seconds')}: {counts}", highlight=False)
    table = Table("user", "status", "waiting for", "next", title="rotations")
    for item in entries:
        if show_all or not item.state.phase.terminal or item.view.needs_person or item.state.phase is Phase.FAILED:
            table.add_row(item.user, item.status, item.view.waiting_for, item.view.command)
    out.print(table)
    if totals["needs_person"]:
        out.print(f"need a person: {', '.join(totals['needs_person'])}", highlight=False)


# `keyrotor audit` has its own module, which imports nothing heavy (no Prefect) when the command line starts.
app.command(name="audit")(audit_cli.audit)


def _run_flow(flow_function: Any, user: str, account: str | None, as_json: bool, ok: tuple[Phase, ...]) -> None:
    """Run a one-user flow in process and print its outcome; clear message and exit code on failure."""
    from prefect import tags

    from keyrotor.inputs import check_user_name
    from keyrotor.tasks.report import user_tags

    try:
        check_user_name(user)
        if account:
            from keyrotor.accounts import check_account_id

            check_account_id(account)
        _start_prefect()
        with tags("keyrotor", *user_tags(user, account)):
            report = flow_function(user_name=user, account_id=account)
    except KeyrotorError as error:
        _fail(error, as_json)
        return
    _print_report(report, as_json, ok)


def _print_report(
    report: dict[str, Any], as_json: bool, ok: tuple[Phase, ...] = (Phase.COMPLETED, Phase.DEACTIVATED)
) -> None:
    """Print a rotation's outcome; exit non-zero unless it reached an ending in ``ok`` for this run."""
    if as_json:
        print(json.dumps(report, default=str))
    else:
        _print_rotation(report)
    if report["phase"] not in ok:
        err.print(
            f"[bold red]rotation ended in phase {report['phase']}:[/] {report.get('error') or ''}", highlight=False
        )
        raise typer.Exit(1)


def _print_rotation(report: dict[str, Any]) -> None:
    table = Table(title=f"rotation {report['rotation_id']} of {report['user_name']}", show_header=False)
    for field in (
        "phase",
        "old_key_id",
        "new_key_id",
        "started_at",
        "published_at",
        "deactivated_at",
        "delete_after",
        "deletion_run_id",
        "completed_at",
    ):
        if report.get(field) is not None:
            table.add_row(field.replace("_", " "), str(report[field]))
    out.print(table)


def _print_status(report: dict[str, Any]) -> None:
    rotation = report["rotation"] or {}
    out.print(
        f"[bold]{report['user']}[/] in account {report['account_id']}; Vault {report['secret_path']} "
        f"names {report['published_key_id'] or 'no key'}"
    )
    keys = Table("key", "status", "created", "last used", "service", "in Vault", "rotation role")
    for key in report["keys"]:
        used = key["last_used"]
        keys.add_row(
            key["key_id"],
            key["status"],
            key["created"],
            used["used_at"] or "never",
            used["service"] or "",
            "yes" if key["published_in_vault"] else "",
            key["role"],
        )
    out.print(keys)
    if rotation:
        out.print(
            f"rotation {rotation['rotation_id']}: phase [bold]{rotation['phase']}[/], started "
            f"{rotation['started_at']} by {rotation['started_by']}"
        )
    if report["lease"]:
        out.print(f"held by {report['lease']['holder']} until {report['lease']['expires_at']}")
    view = report["outlook"]
    out.print(f"doing: {view['doing']}", highlight=False)
    out.print(f"waiting for: {view['waiting_for']}", highlight=False)
    out.print(f"next: {view['command'] or 'nothing to do'}", highlight=False)
