"""How long a rotation waits at each stage: one typed value from the command line or form to the durable record."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator

from keyrotor.core.durations import HINT, Duration, format_duration

QUIET_PERIOD = f"How long the old key must go unused after the new key is published before it is deactivated; {HINT}."
POLL_INTERVAL = f"How often the old key's last use is checked while waiting; {HINT}."
MAX_WAIT = f"Stop waiting after this long (counted from the publish): both keys then stay active; {HINT}."
GRACE_PERIOD = f"How long the deactivated old key is kept before it is deleted (0s: at once); {HINT}."


def duration_field(default: timedelta, description: str) -> Any:
    """A duration field whose default the JSON schema (a Prefect form) shows as people write it: ``1d``, not
    ``P1D``."""
    return Field(default=default, description=description, json_schema_extra={"default": format_duration(default)})


class Timings(BaseModel, frozen=True):
    """A rotation's timings, recorded in its state when it starts. The defaults fit real AWS, whose last-used data
    arrives hours late."""

    quiet_period: Duration = duration_field(timedelta(days=1), QUIET_PERIOD)
    poll_interval: Duration = duration_field(timedelta(minutes=15), POLL_INTERVAL)
    max_wait: Duration = duration_field(timedelta(days=7), MAX_WAIT)
    grace_period: Duration = duration_field(timedelta(days=7), GRACE_PERIOD)

    @model_validator(mode="after")
    def _consistent(self) -> Timings:
        check_consistent(self.quiet_period, self.poll_interval, self.max_wait)
        return self


def check_consistent(quiet_period: timedelta, poll_interval: timedelta, max_wait: timedelta) -> None:
    """Refuse timings a wait could never end well with (ValueError, worded for both forms and flags)."""
    if poll_interval <= timedelta(0):
        raise ValueError("the poll interval must be greater than zero")
    if max_wait < quiet_period:
        raise ValueError(
            f"max wait ({format_duration(max_wait)}) is shorter than the quiet period "
            f"({format_duration(quiet_period)}): the old key could never be seen quiet"
        )
