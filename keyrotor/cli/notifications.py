"""``keyrotor notifications``: tell rotation owners what happened, through the Prefect server's automations."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from keyrotor.cli.common import JSON, err, fail, out
from keyrotor.core.errors import ConfigurationError, KeyrotorError

if TYPE_CHECKING:
    from keyrotor.core.notices import Notice

notifications_app = typer.Typer(
    rich_markup_mode="markdown",
    name="notifications",
    help=(
        "Send a message when a rotation needs a person (stopped at its deadline with the consumers still on the "
        "old key, awaiting approval, rejected, failed), and optionally when it published, completed or rolled "
        "back: keyrotor emits Prefect events, and a notification block and automations on the Prefect server "
        "(PREFECT_API_URL) turn them into Slack, Teams or webhook messages. Works on a self-hosted Prefect server."
    ),
    no_args_is_help=True,
)

ALSO = ("published", "completed", "rolled-back")


@notifications_app.command()
def apply(
    slack_webhook: Annotated[str | None, typer.Option(metavar="URL", help="A Slack incoming webhook.")] = None,
    teams_webhook: Annotated[str | None, typer.Option(metavar="URL", help="A Microsoft Teams webhook.")] = None,
    webhook: Annotated[
        str | None, typer.Option(metavar="URL", help='Any URL: a JSON POST {"subject": ..., "text": ...}.')
    ] = None,
    owner_tag: Annotated[
        str, typer.Option(metavar="TAG", help="The IAM user tag naming who owns a user; messages carry it.")
    ] = "owner",
    also: Annotated[
        list[str] | None,
        typer.Option(
            metavar="EVENT",
            help=f"Also send a message when a rotation is {', '.join(ALSO)} (repeat, or comma-separated).",
        ),
    ] = None,
    remind_after: Annotated[
        str, typer.Option(metavar="DURATION", help="Remind once of an approval left waiting this long; 0s: never.")
    ] = "1d",
    allow_private_urls: Annotated[
        bool, typer.Option(help="Allow a webhook on a private or loopback address (Prefect refuses them).")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the automations and change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False,
) -> None:
    """Create (or update: run it again any time) the notification block and the automations. Exactly one of
    --slack-webhook, --teams-webhook, --webhook."""
    from keyrotor.core.durations import parse_duration
    from keyrotor.core.notices import Notice  # noqa: F811 (at run time; the one above is for the types)

    try:
        chosen = [
            (kind, url)
            for kind, url in (("slack", slack_webhook), ("teams", teams_webhook), ("webhook", webhook))
            if url
        ]
        if len(chosen) != 1:
            raise ConfigurationError("give exactly one of --slack-webhook, --teams-webhook, --webhook")
        asked = [value.strip() for item in also or () for value in item.split(",") if value.strip()]
        unknown = sorted(set(asked) - set(ALSO))
        if unknown:
            raise ConfigurationError(f"--also: {', '.join(unknown)} is not one of {', '.join(ALSO)}")
        try:
            remind = parse_duration(remind_after)
        except ValueError as error:
            raise ConfigurationError(f"--remind-after: {error}") from None
        if timedelta(0) < remind < timedelta(seconds=10):
            raise ConfigurationError("--remind-after: at least 10s (Prefect's shortest proactive trigger), or 0s")
        if not owner_tag.strip():
            raise ConfigurationError("--owner-tag: give a tag key, e.g. owner")
        extra = frozenset(Notice(value) for value in asked)
        reminder = remind if remind.total_seconds() > 0 else None
        if dry_run:
            shown = _planned(extra, reminder)
        else:
            from keyrotor.adapters.notifications import Channel
            from keyrotor.adapters.notifications import apply as apply_notifications

            kind, url = chosen[0]
            channel = Channel(kind, url, allow_private_urls)  # type: ignore[arg-type]
            shown = apply_notifications(channel, extra, reminder, owner_tag.strip())
    except KeyrotorError as error:
        fail(error, as_json)
    if as_json:
        print(json.dumps({"dry_run": dry_run, "channel": chosen[0][0], "automations": shown}))
        return
    out.print(("Would keep" if dry_run else "Kept") + f" a {chosen[0][0]} notification block and:", highlight=False)
    for name in shown:
        out.print(f"  {name}", highlight=False)


def _planned(also: frozenset[Notice], remind: timedelta | None) -> list[str]:
    """What apply would keep: each automation's name and what it does."""
    from uuid import UUID

    from keyrotor.adapters.notifications import automations

    return [f"{a.name}: {a.description}" for a in automations(UUID(int=0), also, remind)]


@notifications_app.command()
def remove(as_json: Annotated[bool, typer.Option("--json", help=JSON)] = False) -> None:
    """Take away the notification automations, the block and the variable saying what is wanted."""
    from keyrotor.adapters.notifications import remove_all

    try:
        removed = remove_all()
    except KeyrotorError as error:
        fail(error, as_json)
    if as_json:
        print(json.dumps({"removed": removed}))
        return
    if not removed:
        err.print("Nothing to remove.")
    for name in removed:
        out.print(f"removed {name}", highlight=False)
