"""Operator input, checked before anything is called: IAM user names and quiet periods. Pure: no I/O.

A bad name or an unsafe duration is a ConfigurationError (exit 2) found before keyrotor talks to AWS, Vault or
Prefect, so nothing changes.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import ValidationError

from keyrotor.core.durations import format_duration
from keyrotor.core.errors import ConfigurationError, describe_invalid
from keyrotor.settings import Settings, Timings

#: IAM's rule for user names (CreateUser): 1 to 64 of letters, digits and ``+=,.@_-``.
USER_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
#: How late AWS may record a key's last use: it "usually appears within 4 hours" (IAM last-accessed data).
AWS_LAST_USED_LATENCY = timedelta(hours=4)
UNSAFE_FLAG = "--accept-unsafe-quiet-period"


def check_user_name(name: str) -> str:
    """Return ``name`` if IAM could have such a user, else raise ConfigurationError saying why."""
    if not USER_NAME.fullmatch(name):
        shown = repr(name) if name else "an empty name"
        raise ConfigurationError(
            f"{shown} is not a valid IAM user name: use 1 to 64 letters, digits or the characters +=,.@_-"
        )
    return name


def check_quiet_period(quiet_period: timedelta, *, real_aws: bool, accepted: bool) -> None:
    """Refuse a quiet period that cannot show that applications stopped using the old key.

    Zero deactivates the old key the moment the new one is published, before any application could switch. On
    real AWS, last-used dates arrive hours late, so anything shorter than that latency can see a busy key as quiet.
    ``accepted`` (the operator's explicit ``--accept-unsafe-quiet-period``) lets it through.
    """
    if accepted:
        return
    if quiet_period <= timedelta(0):
        raise ConfigurationError(
            "quiet-period 0s would deactivate the old key as soon as the new one is published, before "
            f"applications can switch, and break those still using it. Use a longer quiet period, or {UNSAFE_FLAG} "
            "if you know nothing uses the old key"
        )
    if real_aws and quiet_period < AWS_LAST_USED_LATENCY:
        raise ConfigurationError(
            f"quiet-period {format_duration(quiet_period)} is shorter than the {format_duration(AWS_LAST_USED_LATENCY)} "
            "AWS may take to record a key's last use, so a key still in use could look unused and be deactivated. "
            f"Use at least {format_duration(AWS_LAST_USED_LATENCY)} (the default is 1d), or {UNSAFE_FLAG} to accept "
            "the risk"
        )


def resolve_timings(settings: Settings, *durations: str | None) -> Timings:
    """The settings' timings with a run's explicit durations (quiet period, poll interval, max wait, grace period)
    applied; a duration that does not parse, or an impossible combination, is a ConfigurationError."""
    names = ("quiet_period", "poll_interval", "max_wait", "grace_period")
    try:
        return settings.timings.with_overrides(**dict(zip(names, durations, strict=False)))
    except (ValidationError, ValueError) as error:
        raise ConfigurationError(describe_invalid(error, options=True)) from None
