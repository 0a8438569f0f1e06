"""``keyrotor rotate``, ``finish``, ``rollback``, ``pause``, ``resume`` and ``status``: one user's rotation.

Each command builds the flow's typed request from its arguments (:mod:`keyrotor.core.inputs`), so bad input is
refused (exit 2) before anything is called, runs the flow (or starts it on a served server) and prints the
rotation's record, or the error it was refused with, by type.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

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
    printed_json,
    settings_api_url,
    start_prefect,
)
from keyrotor.core.consumers import BLIND_SPOTS
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.model import Phase

if TYPE_CHECKING:
    from keyrotor.adapters.prefect_api import UserFlow
    from keyrotor.core.inputs import Request, RotationRequest, UserRequest
    from keyrotor.core.model import RotationState
    from keyrotor.core.outlook import Outlook
    from keyrotor.deployments.table import Deployment

#: How far back CloudTrail's LookupEvents can see.
CLOUDTRAIL_KEEPS = timedelta(days=90)


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
    the old key is deleted, or deactivated with its deletion scheduled; 1 an operator rejected it; 2 bad input;
    3 precondition failed (no such user, two active keys, tagged keyrotor:exempt...); 4 another run holds the
    rotation, or it was just rotated; 5 the new key never verified; 6 the old key was still in use at max-wait
    (both keys left active); 7 Vault error; 8 AWS error; 9 Prefect server unreachable, or nothing runs its
    deployments.
    """
    from keyrotor.core.durations import format_duration
    from keyrotor.core.inputs import Origin, RotationRequest, TimingFields, check_quiet_period
    from keyrotor.settings import Settings

    given = {
        "quiet_period": quiet_period,
        "poll_interval": poll_interval,
        "max_wait": max_wait,
        "grace_period": grace_period,
    }
    try:
        settings = Settings()
        timings = TimingFields.timing_values(settings.timings, accept_unsafe_quiet_period)
        choices = {"require_approval": require_approval, "force": force}
        values = {"user_name": user, "account_id": account or ""} | timings | _given(given) | choices
        request: RotationRequest = RotationRequest.parse(values, Origin.CLI)
        accepted = accept_unsafe_quiet_period or settings.accept_unsafe_quiet_period
        check_quiet_period(request.quiet_period, real_aws=settings.real_aws, accepted=accepted, origin=Origin.CLI)
        start_prefect()
        from keyrotor.adapters.prefect_api import served, server_name
        from keyrotor.deployments.table import ROTATE

        if not local and served(ROTATE.full_name):
            _on_server(ROTATE, request, "rotate", wait, as_json)
            return
        where = "--local" if local else f"no runner serves {ROTATE.name} on {server_name()}"
        err.print(
            f"Rotating in this process ({where}): it stays until the old key has been unused for "
            f"{format_duration(request.quiet_period)} (at most {format_duration(request.max_wait)}). Serve the "
            "deployments (`keyrotor serve`) to let rotations wait without a process.",
            highlight=False,
        )
        from keyrotor.flows.rotate import rotate_access_key

        state = _run_here(rotate_access_key, request)
    except KeyrotorError as error:
        fail(error, as_json)
        return
    _print_report(state, as_json)


def _given(options: dict[str, str | None]) -> dict[str, str]:
    """The options the operator gave (the others keep the settings' defaults)."""
    return {name: value for name, value in options.items() if value is not None}


def _run_here(flow: UserFlow, request: Request) -> RotationState:
    """Run a one-user flow in this process, tagged for its user, and return its record (or raise its error)."""
    from prefect import tags

    from keyrotor.adapters.prefect_api import run_here
    from keyrotor.core.naming import user_tags

    values = request.model_dump()
    with tags("keyrotor", *user_tags(values["user_name"], values.get("account_id") or None)):
        return run_here(flow, request)


def _on_server(deployment: Deployment, request: UserRequest, verb: str, to_the_end: bool, as_json: bool) -> None:
    """Start the request as a run of the served deployment, named and tagged for its user, follow it until it parks,
    pauses or ends (``to_the_end``: until it ends), and print where it stands."""
    from keyrotor.adapters.connections import Connections
    from keyrotor.adapters.prefect_api import start_run
    from keyrotor.adapters.prefect_runs import PrefectRuns
    from keyrotor.control.follow import Stop, follow
    from keyrotor.control.view import read_view
    from keyrotor.core.naming import run_title, user_tags
    from keyrotor.core.timestamps import utcnow

    user = request.user_name
    connections = Connections.from_settings().for_account(request.account, f"follow-{user}")
    run = start_run(
        deployment.full_name,
        {"request": request.model_dump(mode="json")},
        ["keyrotor", *user_tags(user, connections.account_id)],
        flow_run_name=run_title(verb, user, request.account),
    )
    api = settings_api_url() or ""
    err.print(f"Started flow run {run.name} ({api.removesuffix('/api')}/runs/flow-run/{run.id})", highlight=False)
    runs = PrefectRuns()
    followed = follow(
        connections,
        runs,
        user,
        str(run.id),
        deployment=deployment.full_name,
        to_the_end=to_the_end,
        progress=lambda line: err.print(f"  {line}"),
    )
    records = connections.records(user)
    view = read_view(records, connections.waiting, connections.account_id, user, utcnow())
    state = view.state
    if as_json:
        report = (state.to_json() if state else {"phase": None}) | {"flow_run_id": str(run.id)}
        print(json.dumps(report | {"outlook": view.outlook.to_json()}, default=str))
    else:
        if state is not None:
            _print_rotation(state)
        _print_outlook(view.outlook)
    ended_well = state is not None and state.phase in (Phase.COMPLETED, Phase.DEACTIVATED, Phase.ROLLED_BACK)
    if state is None or (followed.stopped_because is Stop.ENDED and not ended_well):
        raise typer.Exit(1)


def finish(
    user: Annotated[str, typer.Argument(help="The IAM user whose deactivated key is due for deletion.")],
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Delete USER's deactivated old key now that its grace period is over (what the scheduled run does); after a
    rollback, the deactivated new key."""
    from keyrotor.core.inputs import UserRequest
    from keyrotor.flows.delete_old_key import delete_old_key_after_grace

    _one_user_flow(delete_old_key_after_grace, UserRequest, {"user_name": user, "account_id": account or ""}, as_json)


def rollback(
    user: Annotated[str, typer.Argument(help="The IAM user whose rotation to undo.")],
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Deactivate the new key at once (a leaked key) instead of once it has gone unused for the quiet "
            "period: applications still holding it are refused until they re-read Vault.",
        ),
    ] = False,
    account: AccountOption = None,
    local: Annotated[
        bool, typer.Option("--local", help="Roll back in this process even if the deployments are served.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="With a served deployment: follow the rollback to its end.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Roll USER back to the old key, refusing no application's call: the old key is made active and restored in
    Vault at once; the new key stays active until it has gone unused for the quiet period, then it is deactivated,
    and deleted after the grace period (--now: deactivated at once).

    Against a server that serves the rollback-rotation deployment the rollback runs there and waits without a
    process (this command returns once the old key is back; --wait follows it to the end); without one, or with
    --local, it runs and waits here. It also cancels the scheduled deletion and a paused or waiting run. Possible
    until the old key is deleted; after that it says so and changes nothing. Safe to run again (it continues).
    """
    from keyrotor.core.inputs import Origin, RollbackRequest
    from keyrotor.flows.rollback import rollback_rotation

    try:
        request = RollbackRequest.parse({"user_name": user, "account_id": account or "", "now": now}, Origin.CLI)
        start_prefect()
        from keyrotor.adapters.prefect_api import served
        from keyrotor.deployments.table import ROLLBACK

        if now:
            err.print(
                "The new key is deactivated as soon as the old key is back: applications that still hold it are "
                "refused until they re-read Vault.",
                highlight=False,
            )
        if not local and served(ROLLBACK.full_name):
            _on_server(ROLLBACK, request, "roll back", wait, as_json)
            return
        state = _run_here(rollback_rotation, request)
    except KeyrotorError as error:
        fail(error, as_json)
        return
    _print_report(state, as_json)


def _one_user_flow(flow: UserFlow, kind: type[Request], values: dict[str, Any], as_json: bool) -> None:
    """Run a one-user flow in this process and print its record; clear message and exit code on failure."""
    from keyrotor.core.inputs import Origin

    try:
        request = kind.parse(values, Origin.CLI)
        start_prefect()
        state = _run_here(flow, request)
    except KeyrotorError as error:
        fail(error, as_json)
        return
    _print_report(state, as_json)


def pause(
    user: Annotated[str, typer.Argument(help="The IAM user whose rotation to pause.")],
    account: AccountOption = None,
) -> None:
    """Pause USER's rotation, in any phase, like the Prefect UI's Pause: its flow run is suspended, holds no
    process, and waits (with no timeout) until `keyrotor resume USER` or the UI's Resume.

    Works for rotations running from a deployment (served or on a worker), also while they wait for the old key
    to go quiet. A paused rotation still blocks other rotations of USER and can be rolled back.
    """
    from keyrotor.adapters.prefect_runs import PrefectRuns
    from keyrotor.control.pause import pause_rotation
    from keyrotor.core.inputs import check_user_name

    try:
        check_user_name(user)
        run_id = pause_rotation(connections_for(account, f"pause-{user}"), PrefectRuns(), user)
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
    from keyrotor.adapters.connections import whoami
    from keyrotor.adapters.prefect_runs import PrefectRuns
    from keyrotor.control.pause import resume_rotation
    from keyrotor.core.inputs import check_user_name
    from keyrotor.core.model import Answer

    answer = None
    if approve is not None:
        choice = Answer.APPROVE if approve else Answer.REJECT
        answer = {"answer": choice.value, "note": note, "answered_by": f"{whoami()} (keyrotor resume)"}
    try:
        check_user_name(user)
        run_id = resume_rotation(connections_for(account, f"resume-{user}"), PrefectRuns(), user, answer)
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
    if printed_json(report, as_json):
        return
    out.print(
        f"[bold]{report.user}[/] in account {report.account_id}; Vault {report.secret_path} "
        f"names {report.published_key_id or 'no key'}"
    )
    keys = Table("key", "status", "created", "last used", "service", "in Vault", "rotation role")
    for line in report.keys:
        used = line.last_used
        keys.add_row(
            line.key.key_id,
            line.key.status.value,
            line.key.created.isoformat(),
            used.used_at.isoformat() if used.used_at else "never",
            used.service or "",
            "yes" if line.published else "",
            line.role,
        )
    out.print(keys)
    state = report.view.state
    if state is not None:
        out.print(
            f"{state.kind.value} {state.rotation_id}: phase [bold]{state.phase.value}[/], started "
            f"{state.started_at.isoformat()} by {state.started_by}"
        )
    lease = report.view.lease
    if report.view.run_alive and lease is not None and lease.expires_at is not None:
        out.print(f"held by {lease.holder} until {lease.expires_at.isoformat()}")
    if report.consumers is not None:
        out.print(f"consumers since the publish (CloudTrail): {report.consumers.describe()}", highlight=False)
    _print_outlook(report.view.outlook)


def consumers(
    user: Annotated[str, typer.Argument(help="The IAM user whose keys to look up.")],
    key: Annotated[str | None, typer.Option("--key", metavar="AKIA...", help="Only this key of USER.")] = None,
    since: Annotated[
        str, typer.Option("--since", metavar="DURATION", help="How far back to look: 1h, 7d... (at most 90d).")
    ] = "7d",
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Show who uses USER's access keys, from CloudTrail: each source address and program (user agent), the calls
    it made, first and last seen, how many.

    Read-only. Use it before a first rotation to find the applications that read a key from their own
    configuration (move them to Vault first), and when a rotation stopped because its old key is still in use.
    CloudTrail's LookupEvents (permission cloudtrail:LookupEvents, statement WhoUsesAKey of
    policies/iam-policy.json) is read in the key's last-used region and in KEYROTOR_TRAIL_REGIONS (us-east-1,
    where AWS records IAM and global STS calls). It shows management events only (no S3 object reads or other data
    events), of the last 90 days, minutes after they happen.
    """
    from keyrotor.adapters.cloudtrail import MOST_EVENTS
    from keyrotor.control.consumers import user_consumers
    from keyrotor.core.durations import format_duration, parse_duration
    from keyrotor.core.errors import ConfigurationError
    from keyrotor.core.inputs import check_key_id, check_user_name

    try:
        check_user_name(user)
        if key is not None:
            check_key_id(key)
        try:
            window = parse_duration(since)
        except ValueError as error:
            raise ConfigurationError(f"--since: {error}") from None
        if not timedelta(0) < window <= CLOUDTRAIL_KEEPS:
            raise ConfigurationError(f"--since: {since!r} is not between 1s and 90d (what CloudTrail keeps)")
        report = user_consumers(connections_for(account, f"consumers-{user}"), user, window, key)
    except KeyrotorError as error:
        fail(error, as_json)
    if printed_json(report, as_json):
        return
    out.print(f"[bold]{report.user}[/] in account {report.account_id}: consumers since {report.since.isoformat()}")
    for use in report.keys:
        used = use.last_used.describe().removeprefix(f"{use.key.key_id} ")
        where = ", ".join(use.consumers.regions) or "no region"
        newest = f" (its newest {MOST_EVENTS} events per region only)" if use.consumers.truncated else ""
        out.print(f"{use.key.key_id} ({use.key.status.value}; {used}); CloudTrail in {where}{newest}:", highlight=False)
        if use.consumers.unavailable:
            err.print(f"  [yellow]{use.consumers.unavailable}[/]", highlight=False)
            continue
        if not use.consumers.consumers:
            out.print("  no call seen")
            continue
        table = Table("address", "program", "calls", "first seen", "last seen", "count")
        seen = Counter((c.source_ip, c.program) for c in use.consumers.consumers)
        for consumer in use.consumers.consumers:  # --json has the whole user agent; shown here when needed
            table.add_row(
                consumer.source_ip,
                consumer.user_agent if seen[(consumer.source_ip, consumer.program)] > 1 else consumer.program,
                ", ".join(consumer.calls),
                f"{consumer.first_seen:%Y-%m-%d %H:%M:%S}",
                f"{consumer.last_seen:%Y-%m-%d %H:%M:%S}",
                str(consumer.count),
            )
        out.print(table)
    out.print(f"[dim]Not seen: {BLIND_SPOTS} (within {format_duration(window)}).[/]")


def _print_report(
    state: RotationState, as_json: bool, ok: tuple[Phase, ...] = (Phase.COMPLETED, Phase.DEACTIVATED, Phase.ROLLED_BACK)
) -> None:
    """Print a rotation's record and what happens next; exit non-zero unless it reached an ending in ``ok``."""
    from keyrotor.core.outlook import outlook

    view = outlook(state, state.user_name)
    if as_json:
        print(json.dumps(state.to_json() | {"outlook": view.to_json()}, default=str))
    else:
        _print_rotation(state)
        _print_outlook(view)
    if state.phase not in ok:
        err.print(f"[bold red]rotation ended in phase {state.phase.value}:[/] {state.error or ''}", highlight=False)
        raise typer.Exit(1)


def _print_rotation(state: RotationState) -> None:
    table = Table(title=f"{state.kind.value} {state.rotation_id} of {state.user_name}", show_header=False)
    rows: list[tuple[str, object]] = [
        ("phase", state.phase.value),
        ("old key id", state.old_key_id),
        ("new key id", state.new_key_id),
        ("started at", state.started_at),
        ("published at", state.published_at),
        ("deactivated at", state.deactivated_at),
        ("delete after", state.delete_after),
        ("deletion run id", state.deletion_run_id),
        ("completed at", state.completed_at),
    ]
    if state.rollback is not None:
        rows += [
            ("rolled back at", state.rollback.restored_at),
            ("new key deactivated at", state.rollback.new_key_deactivated_at),
            ("new key deleted after", state.rollback.delete_after),
        ]
    for name, value in rows:
        if value is not None:
            table.add_row(name, value.isoformat() if hasattr(value, "isoformat") else str(value))
    out.print(table)


def _print_outlook(view: Outlook) -> None:
    out.print(f"doing: {view.doing}", highlight=False)
    out.print(f"waiting for: {view.waiting_for}", highlight=False)
    out.print(f"next: {view.command or 'nothing to do'}", highlight=False)
