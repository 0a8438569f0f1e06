"""Operator input, typed and checked once at the boundary, before anything is called. Pure: no I/O.

Every entry point (the command line, a Prefect form, ``prefect deployment run --params``, a schedule, the
remediation) builds one of the requests below; a flow takes exactly one. A field that does not validate is a
ConfigurationError (exit 2) found before keyrotor talks to AWS, Vault or Prefect, so nothing changes. Names and
account ids are ASCII only, as AWS defines them: Python's ``\\d`` and ``\\w`` would also take other scripts' digits
and letters. The JSON schema of each field carries the same pattern, so Prefect's server refuses a run with a bad
parameter before it is created, and the UI's form says so.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from keyrotor.core.durations import Duration, format_duration
from keyrotor.core.errors import ConfigurationError, describe_invalid
from keyrotor.core.timings import (
    GRACE_PERIOD,
    MAX_WAIT,
    POLL_INTERVAL,
    QUIET_PERIOD,
    Timings,
    check_consistent,
    duration_field,
)

#: IAM's rule for user names (CreateUser): 1 to 64 of ASCII letters, digits and ``+=,.@_-``.
USER_NAME_PATTERN = r"^[A-Za-z0-9+=,.@_-]{1,64}$"
#: An AWS account id: 12 ASCII digits.
ACCOUNT_ID_PATTERN = r"^[0-9]{12}$"
#: An access key id as IAM issues them: upper-case ASCII letters and digits, 16 to 128 of them.
KEY_ID_PATTERN = r"^[A-Z0-9]{16,128}$"
_USER_NAME = re.compile(USER_NAME_PATTERN.strip("^$"), re.ASCII)
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN.strip("^$"), re.ASCII)
_KEY_ID = re.compile(KEY_ID_PATTERN.strip("^$"), re.ASCII)
#: How late AWS may record a key's last use: it "usually appears within 4 hours" (IAM last-accessed data).
AWS_LAST_USED_LATENCY = timedelta(hours=4)


class Origin(StrEnum):
    """Where a request came from, so a refusal names what the operator can change there."""

    CLI = "cli"  # a flag: --accept-unsafe-quiet-period
    FORM = "form"  # a deployment run's parameter: accept_unsafe_quiet_period


def check_user_name(name: str) -> str:
    """Return ``name`` if IAM could have such a user, else raise ConfigurationError saying why."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        shown = repr(name) if name else "an empty name"
        raise ConfigurationError(
            f"{shown} is not a valid IAM user name: use 1 to 64 ASCII letters, digits or the characters +=,.@_-"
        )
    return name


def check_account_id(value: str) -> str:
    """Return ``value`` if it is an AWS account id (12 ASCII digits, nothing around them), else ConfigurationError."""
    if not isinstance(value, str) or not _ACCOUNT_ID.fullmatch(value):
        raise ConfigurationError(f"{value!r} is not an AWS account id: it has 12 digits, e.g. 111122223333")
    return value


def check_key_id(value: str) -> str:
    """Return ``value`` if it looks like an access key id (``AKIA...``), else ConfigurationError."""
    if not isinstance(value, str) or not _KEY_ID.fullmatch(value):
        raise ConfigurationError(f"{value!r} is not an access key id (upper-case letters and digits, e.g. AKIA...)")
    return value


def _own_or_account(value: str) -> str:
    return value if value == "" else check_account_id(value)


def _none_or_key(value: str) -> str:
    return value if value == "" else check_key_id(value)


def _as_value_error(check: Any) -> Any:
    """A checker as a pydantic validator: its ConfigurationError becomes the field's error, message intact."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except ConfigurationError as error:
            raise ValueError(str(error)) from None

    return AfterValidator(validate)


UserName = Annotated[
    str,
    _as_value_error(check_user_name),
    Field(
        title="IAM user",
        description="The IAM user (1 to 64 ASCII letters, digits and +=,.@_-).",
        json_schema_extra={"pattern": USER_NAME_PATTERN},
    ),
]
AccountId = Annotated[str, _as_value_error(check_account_id), Field(json_schema_extra={"pattern": ACCOUNT_ID_PATTERN})]
#: An account id, or "" for the account of keyrotor's own credentials (no None toggle in the form).
AccountChoice = Annotated[
    str,
    _as_value_error(_own_or_account),
    Field(
        title="AWS account",
        description="The user's AWS account (12 digits); empty: the account of keyrotor's own credentials. A member "
        "account is entered through KEYROTOR_ROLE_NAME.",
        json_schema_extra={"pattern": f"^$|{ACCOUNT_ID_PATTERN}"},
    ),
]
KeyId = Annotated[str, _as_value_error(check_key_id), Field(json_schema_extra={"pattern": KEY_ID_PATTERN})]
KeyChoice = Annotated[str, _as_value_error(_none_or_key), Field(json_schema_extra={"pattern": f"^$|{KEY_ID_PATTERN}"})]


#: The order of the fields in Prefect's run form: who first, then the timings, then the choices.
FORM_ORDER = (
    "user_name",
    "account_id",
    "key_id",
    "keep_key_id",
    "min_idle_days",
    "quiet_period",
    "poll_interval",
    "max_wait",
    "grace_period",
    "require_approval",
    "now",
    "accept_unsafe_quiet_period",
    "force",
)


def _in_form_order(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Prefect's form lists a model's fields by their ``position``: give each field its place in the procedure."""
    order = [name for name in FORM_ORDER if name in model.model_fields] + [
        name for name in model.model_fields if name not in FORM_ORDER
    ]
    for position, name in enumerate(order):
        if name in schema.get("properties", {}):
            schema["properties"][name]["position"] = position


class Request(BaseModel):
    """What every request shares: refuse unknown fields (a typo must not be ignored) and stay immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_in_form_order)

    @classmethod
    def parse(cls, values: Any, origin: Origin = Origin.FORM) -> Any:
        """Validate ``values`` (a dict, or a request already), as ConfigurationError naming each bad field the way
        ``origin`` spells it."""
        if isinstance(values, cls):
            return values
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigurationError(describe_invalid(error, options=origin is Origin.CLI)) from None


class UserRequest(Request):
    """One user, in one account: what ``delete-old-key``, ``pause-rotation`` and the others act on."""

    user_name: UserName
    account_id: AccountChoice = ""

    @property
    def account(self) -> str | None:
        """The account id, None for keyrotor's own account."""
        return self.account_id or None


class RollbackRequest(UserRequest):
    """Roll a user back to the old key."""

    now: bool = Field(
        default=False,
        title="Deactivate the new key now",
        description="Deactivate the new key at once instead of after it has gone unused for the quiet period "
        "(a leaked key): applications that still hold it are refused until they re-read Vault.",
    )


class TimingFields(Request):
    """The four durations of a wait, with their real defaults shown in the form, and the unsafe-quiet-period choice."""

    quiet_period: Duration = duration_field(timedelta(days=1), QUIET_PERIOD)
    poll_interval: Duration = duration_field(timedelta(minutes=15), POLL_INTERVAL)
    max_wait: Duration = duration_field(timedelta(days=7), MAX_WAIT)
    grace_period: Duration = duration_field(timedelta(days=7), GRACE_PERIOD)
    accept_unsafe_quiet_period: bool = Field(
        default=False,
        description="Allow a quiet period of 0s, or on real AWS one shorter than the 4h AWS may take to record a "
        "key's last use: the old key may be deactivated while applications still use it.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TimingFields:
        check_consistent(self.quiet_period, self.poll_interval, self.max_wait)
        return self

    @property
    def timings(self) -> Timings:
        return Timings(
            quiet_period=self.quiet_period,
            poll_interval=self.poll_interval,
            max_wait=self.max_wait,
            grace_period=self.grace_period,
        )

    def timing_fields(self) -> dict[str, Any]:
        """These fields, to build another request with the same timings."""
        return {name: getattr(self, name) for name in TimingFields.model_fields}

    @classmethod
    def timing_values(cls, timings: Timings, accept_unsafe_quiet_period: bool = False) -> dict[str, Any]:
        """The fields for ``timings`` (e.g. the settings' defaults, read from ``KEYROTOR_*``)."""
        return timings.model_dump() | {"accept_unsafe_quiet_period": accept_unsafe_quiet_period}


class TimedRequest(UserRequest, TimingFields):
    """A user's request whose wait has timings."""


class RotationRequest(TimedRequest):
    """Rotate a user's access key (the ``rotate-access-key`` form)."""

    require_approval: bool = Field(
        default=False,
        description="Before deactivating the old key, wait for an operator's approval (a form on the run shows the "
        "last-used evidence).",
    )
    force: bool = Field(
        default=False,
        description="Rotate even if keyrotor's last rotation of this user was due less than "
        "KEYROTOR_ROTATION_COOLDOWN (default 1d) ago, or the user is tagged keyrotor:exempt.",
    )


class RetirementRequest(TimedRequest):
    """Retire one key of a user without creating another (remediation of two active keys or an unused key)."""

    key_id: KeyId = Field(description="The access key to deactivate and later delete.")
    keep_key_id: KeyChoice = Field(
        default="", description="The user's other key, which must stay Active; empty when the user keeps no key."
    )
    min_idle_days: int = Field(
        default=0, ge=0, le=36500, description="Refuse unless the key is still unused for this many days (0: no check)."
    )


def check_quiet_period(quiet_period: timedelta, *, real_aws: bool, accepted: bool, origin: Origin) -> None:
    """Refuse a quiet period that cannot show that applications stopped using the old key.

    Zero deactivates the old key the moment the new one is published, before any application could switch. On
    real AWS, last-used dates arrive hours late, so anything shorter than that latency can see a busy key as quiet.
    ``accepted`` (the operator's explicit choice) lets it through; the refusal names the flag or the form's field.
    """
    if accepted:
        return
    how = "--accept-unsafe-quiet-period" if origin is Origin.CLI else "accept_unsafe_quiet_period in the form"
    if quiet_period <= timedelta(0):
        raise ConfigurationError(
            "quiet period 0s would deactivate the old key as soon as the new one is published, before "
            f"applications can switch, and break those still using it. Use a longer quiet period, or set {how} "
            "if you know nothing uses the old key"
        )
    if real_aws and quiet_period < AWS_LAST_USED_LATENCY:
        latency = format_duration(AWS_LAST_USED_LATENCY)
        raise ConfigurationError(
            f"quiet period {format_duration(quiet_period)} is shorter than the {latency} AWS may take to record a "
            f"key's last use, so a key still in use could look unused and be deactivated. Use at least {latency} "
            f"(the default is 1d), or set {how} to accept the risk"
        )


#: User-name globs (``svc-*``): the user name's characters and the glob's own.
GLOB_PATTERN = r"^[A-Za-z0-9+=,.@_*?\[\]!-]{1,64}$"
_GLOB = re.compile(GLOB_PATTERN.strip("^$"), re.ASCII)


def check_glob(value: str) -> str:
    if not isinstance(value, str) or not _GLOB.fullmatch(value):
        raise ConfigurationError(f"{value!r} is not a user name or glob (ASCII letters, digits, +=,.@_- and *?[]!)")
    return value


UserGlob = Annotated[str, _as_value_error(check_glob), Field(json_schema_extra={"pattern": GLOB_PATTERN})]


class RemediationRequest(TimingFields):
    """Audit the account(s) and remedy every flagged user (the ``audit-and-remediate`` form)."""

    dry_run: bool = Field(default=False, description="Publish the audit and the plan only; change nothing.")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Most users remedied at once.")
    users: list[UserGlob] = Field(default_factory=list, description="Only these users (globs); empty: every user.")
    accounts: list[AccountId] = Field(
        default_factory=list, description="The AWS accounts to remediate; empty: the account of keyrotor's credentials."
    )
    organization: bool = Field(default=False, description="Every ACTIVE account of the organization instead.")
