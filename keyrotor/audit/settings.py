"""The audit's settings, read from ``KEYROTOR_AUDIT_*``; ``keyrotor audit``'s options override them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keyrotor.audit.cis import AuditPolicy
from keyrotor.core.durations import Duration
from keyrotor.core.errors import ConfigurationError, describe_invalid


def _split_globs(value: str | Sequence[str]) -> tuple[str, ...]:
    """Accept ``svc-*,ci-*`` from the environment as well as a list from the command line."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


Globs = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_globs)]


class AuditSettings(BaseSettings):
    """Thresholds and exemptions of ``keyrotor audit``; the defaults are the CIS benchmark's."""

    model_config = SettingsConfigDict(env_prefix="KEYROTOR_AUDIT_", extra="ignore", frozen=True)

    max_key_age_days: int = Field(
        default=90, ge=1, le=36500, description="An active key created more than this many days ago is too old."
    )
    unused_days: int = Field(
        default=45,
        ge=1,
        le=36500,
        description="An active key unused this many days (a never-used key: created this long ago) is unused.",
    )
    exempt_tag: str = Field(
        default="keyrotor:exempt",
        max_length=128,
        description="Users with this tag key (any value but 'false') are exempt; empty: no tag lookup at all.",
    )
    exempt_users: Globs = Field(
        default=(), description="Users whose name matches one of these globs are exempt (comma-separated)."
    )
    report_timeout: Duration = Field(
        default=timedelta(minutes=5), description="How long to wait for IAM to generate the credential report."
    )

    @classmethod
    def load(cls, **overrides: Any) -> AuditSettings:
        """Read the environment, with the given (non-None) values taking precedence.

        Raises:
            ConfigurationError: A value is out of range or does not parse.
        """
        try:
            return cls(**{name: value for name, value in overrides.items() if value is not None})
        except ValidationError as error:
            problems = describe_invalid(error)
            raise ConfigurationError(f"invalid audit settings (options or KEYROTOR_AUDIT_*): {problems}") from None

    def policy(self, only_users: Sequence[str] = ()) -> AuditPolicy:
        """The audit policy these settings describe, limited to ``only_users`` globs when given."""
        return AuditPolicy(
            max_key_age_days=self.max_key_age_days,
            unused_days=self.unused_days,
            exempt_tag=self.exempt_tag.strip(),
            exempt_users=self.exempt_users,
            only_users=tuple(only_users),
        )
