"""``keyrotor rotate``, ``finish``, ``rollback``, ``pause``, ``resume`` and ``status``: one user's rotation."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from keyrotor.cli.common import (
    APPROVAL,
    FORCE,
    GRACE,
    JSON,
    LOCAL,
    MAX_WAIT,
    POLL,
    QUIET,
    UNSAFE,
    WAIT,
    AccountOption,
    connections_for,
    err,
    fail,
    out,
    settings_api_url,
    start_prefect,
)
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.model import Phase


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
    from keyrotor.core.durations import format_duration
    from keyrotor.core.inputs import check_quiet_period, check_user_name, resolve_timings
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
            from keyrotor.adapters.accounts import check_account_id

            check_account_id(account)
        settings = Settings()
        timings = resolve_timings(settings, quiet_period, poll_interval, max_wait, grace_period)
        accepted = accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
        check_quiet_period(timings.quiet_period, real_aws=settings.real_aws, accepted=accepted)
        start_prefect()
        from keyrotor.adapters.prefect_api import served, server_name
        from keyrotor.deployments.table import ROTATE

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
        fail(error, as_json)
        return
    _print_report(report, as_json)


def _rotate_on_server(user: str, parameters: dict[str, Any], to_the_end: bool, as_json: bool) -> None:
    """Start the rotation as a run of the served deployment, follow it, and print where it stands."""
    from keyrotor.adapters.connections import Connections
    from keyrotor.adapters.prefect_api import start_run
    from keyrotor.control.follow import follow
    from keyrotor.core.outlook import outlook
    from keyrotor.core.timestamps import utcnow
    from keyrotor.deployments.table import ROTATE
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


def finish(
    user: Annotated[str, typer.Argument(help="The IAM user whose deactivated old key is due for deletion.")],
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Delete USER's deactivated old key now that its grace period is over (what the scheduled run does)."""
    from keyrotor.flows.delete_old_key import delete_old_key_after_grace

    _run_flow(delete_old_key_after_grace, user, account, as_json, (Phase.COMPLETED,))


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


def pause(
    user: Annotated[str, typer.Argument(help="The IAM user whose rotation to pause.")],
    account: AccountOption = None,
) -> None:
    """Pause USER's rotation, in any phase, like the Prefect UI's Pause: its flow run is suspended, holds no
    process, and waits (with no timeout) until `keyrotor resume USER` or the UI's Resume.

    Works for rotations running from a deployment (served or on a worker), also while they wait for the old key
    to go quiet. A paused rotation still blocks other rotations of USER and can be rolled back.
    """
    from keyrotor.control.pause import pause_rotation
    from keyrotor.core.inputs import check_user_name

    try:
        check_user_name(user)
        run_id = pause_rotation(connections_for(account, f"pause-{user}"), user)
    except KeyrotorError as error:
        fail(error, False)
        return
    out.print(f"Paused the rotation of {user} (flow run {run_id}); no process holds it now.")


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
    from keyrotor.control.pause import resume_rotation
    from keyrotor.core.inputs import check_user_name

    answer = None if approve is None else {"approve": approve, "note": note}
    try:
        check_user_name(user)
        run_id = resume_rotation(connections_for(account, f"resume-{user}"), user, answer)
    except KeyrotorError as error:
        fail(error, False)
        return
    out.print(f"Resumed the rotation of {user} (flow run {run_id}); it continues on the serve process or worker.")


def status(
    user: Annotated[str, typer.Argument(help="The IAM user to look at.")],
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Show USER's keys with their last use, the key published in Vault, the rotation's phase and what happens next.

    Read-only: it changes nothing in IAM or Vault.
    """
    from keyrotor.control.status import user_status
    from keyrotor.core.inputs import check_user_name

    try:
        check_user_name(user)
        report = user_status(connections_for(account, f"status-{user}"), user)
    except KeyrotorError as error:
        fail(error, as_json)
        return
    if as_json:
        print(json.dumps(report, default=str))
        return
    _print_status(report)


def _run_flow(flow_function: Any, user: str, account: str | None, as_json: bool, ok: tuple[Phase, ...]) -> None:
    """Run a one-user flow in process and print its outcome; clear message and exit code on failure."""
    from prefect import tags

    from keyrotor.core.inputs import check_user_name
    from keyrotor.tasks.report import user_tags

    try:
        check_user_name(user)
        if account:
            from keyrotor.adapters.accounts import check_account_id

            check_account_id(account)
        start_prefect()
        with tags("keyrotor", *user_tags(user, account)):
            report = flow_function(user_name=user, account_id=account)
    except KeyrotorError as error:
        fail(error, as_json)
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
