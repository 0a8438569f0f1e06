"""What the command groups share: the consoles, the error exit, the options' help texts, the connections in an
account and a Prefect API for in-process runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol

import typer
from rich.console import Console
from rich.markup import escape

from keyrotor.core.errors import KeyrotorError

if TYPE_CHECKING:
    from keyrotor.adapters.connections import Connections

out = Console()
err = Console(stderr=True)

# The help texts of options that several commands take.
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
ACCOUNT = (
    "The AWS account of the user (12 digits); keyrotor enters a member account by assuming KEYROTOR_ROLE_NAME "
    "(default OrganizationAccountAccessRole). Default: the account of keyrotor's own credentials."
)
LOCAL = (
    "Run the rotation in this process even if a Prefect server serves the deployments (it then waits here, polling, "
    "until the old key is quiet)."
)
WAIT = "With a served deployment: follow the rotation to its end instead of returning once the new key is published."
AccountOption = Annotated[str | None, typer.Option("--account", metavar="ID", help=ACCOUNT)]


class Reported(Protocol):
    """A command's result that scripts read: ``to_json`` is what ``--json`` prints."""

    def to_json(self) -> dict[str, Any]: ...


def printed_json(report: Reported, as_json: bool) -> bool:
    """With ``--json``: print ``report`` as one JSON object on stdout and return True (the command prints nothing
    else); without it, return False."""
    if as_json:
        print(json.dumps(report.to_json(), default=str))
    return as_json


def fail(error: KeyrotorError, as_json: bool) -> NoReturn:
    """Report the error on stderr (and as one JSON object on stdout with ``--json``) and exit with its code."""
    if as_json:
        print(json.dumps({"error": type(error).__name__, "message": str(error), "exit_code": error.exit_code}))
    err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
    raise typer.Exit(error.exit_code)


def connections_for(account: str | None, purpose: str) -> Connections:
    """The connections in the user's account (checked as an account id first: bad input is exit 2)."""
    from keyrotor.adapters.accounts import check_account_id
    from keyrotor.adapters.connections import Connections

    return Connections.from_settings().for_account(check_account_id(account) if account else None, purpose)


def settings_api_url() -> str | None:
    """The Prefect API in use, if any (none: Prefect starts a temporary server)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def start_prefect() -> None:
    """Start Prefect's temporary server (when there is no PREFECT_API_URL) before any flow runs, one at a time."""
    from keyrotor.adapters.prefect_api import prefect_call, start_temporary_server

    with prefect_call("start Prefect's temporary local server"):
        start_temporary_server()
