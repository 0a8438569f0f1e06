"""keyrotor's settings: one pydantic-settings class, read from ``KEYROTOR_*`` and the standard Vault variables.

AWS is configured the standard way (``AWS_PROFILE``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``...),
which boto3 reads itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keyrotor.core.durations import Duration
from keyrotor.core.timings import Timings
from keyrotor.deployments.table import DELETE


def _comma_separated(value: str | Sequence[str]) -> tuple[str, ...]:
    """``us-east-1,eu-west-1`` from the environment, or a list."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


Regions = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)]


class Settings(BaseSettings):
    """Everything keyrotor reads from its environment.

    Real-AWS defaults are deliberately slow: AWS records a key's last use coarsely and hours late, so a quiet
    period shorter than a day can deactivate a key that is still in use.
    """

    model_config = SettingsConfigDict(env_prefix="KEYROTOR_", populate_by_name=True, extra="ignore")

    vault_addr: str = Field(
        default="http://127.0.0.1:8200",
        validation_alias=AliasChoices("KEYROTOR_VAULT_ADDR", "VAULT_ADDR"),
        description="Vault/OpenBao address.",
    )
    vault_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("KEYROTOR_VAULT_TOKEN", "VAULT_TOKEN"),
        description="Vault token; falls back to ~/.vault-token like the vault CLI.",
    )
    vault_namespace: str | None = Field(
        default=None, validation_alias=AliasChoices("KEYROTOR_VAULT_NAMESPACE", "VAULT_NAMESPACE")
    )
    vault_auth: Literal["token", "approle", "jwt", "kubernetes"] = Field(
        default="token", description="How keyrotor logs in to Vault (see keyrotor/adapters/vault_auth.py)."
    )
    vault_auth_mount: str | None = Field(default=None, description="The auth method's mount; default: its name.")
    vault_role: str | None = Field(default=None, description="The role to log in as (jwt, kubernetes).")
    vault_role_id: str | None = Field(default=None, description="The AppRole role id.")
    vault_secret_id: SecretStr | None = Field(default=None, description="The AppRole secret id (or a file, below).")
    vault_secret_id_file: Path | None = Field(default=None, description="A file holding the AppRole secret id.")
    vault_jwt_file: Path | None = Field(
        default=None, description="A file holding the JWT to log in with (jwt; kubernetes defaults to its token)."
    )
    vault_mount: str = Field(default="secret", description="KV version 2 mount holding secrets and rotation state.")
    vault_path: str = Field(
        default="aws/{account_id}/{user_name}",
        description="Where applications read the key: fields aws_access_key_id and aws_secret_access_key.",
    )
    state_path: str = Field(
        default="keyrotor/{account_id}/{user_name}",
        description="Folder of keyrotor's own records for a user: state, lease and the unpublished new key.",
    )
    waiting_path: str = Field(
        default="keyrotor-waker/waiting/{account_id}/{user_name}",
        description="Vault's index of parked rotations: when the waker checks each next.",
    )
    waker_lease_path: str = Field(
        default="keyrotor-waker/lease", description="Which waker is the one checking parked rotations now."
    )
    pickup_timeout: Duration = Field(
        default=timedelta(seconds=90),
        description="How long `keyrotor rotate` on a server waits for a runner or worker to start its run before it "
        "says why none did (nothing polls, or the work pool is full).",
    )
    waker_lease_ttl: Duration = Field(
        default=timedelta(seconds=15),
        description="A waker that died is replaced by another (keyrotor serve, keyrotor waker) within this long.",
    )
    waker_interval: Duration = Field(
        default=timedelta(seconds=5),
        description="How often the waker lists parked rotations (a due one waits at most this long to be checked).",
    )
    park_waits: bool = Field(
        default=True,
        description="Runs from a deployment suspend while they wait (holding no process) instead of polling.",
    )
    park_after: Duration = Field(
        default=timedelta(minutes=1),
        description="A run parks only when its wait cannot end sooner than this; a shorter wait is waited in its "
        "process (waking a parked run starts a new process, seconds of CPU).",
    )
    serve_limit: int = Field(
        default=4, ge=1, le=256, description="Most flow runs `keyrotor serve` runs at once (waiting runs hold none)."
    )
    timings: Timings = Field(default_factory=Timings)
    quiet_period: Duration | None = Field(default=None, description="Overrides timings.quiet_period.")
    poll_interval: Duration | None = Field(default=None, description="Overrides timings.poll_interval.")
    max_wait: Duration | None = Field(default=None, description="Overrides timings.max_wait.")
    grace_period: Duration | None = Field(default=None, description="Overrides timings.grace_period.")
    lease_ttl: Duration = Field(
        default=timedelta(minutes=1),
        description="A rotation whose process died is taken over by a new run after at most this long.",
    )
    verify_timeout: Duration = Field(
        default=timedelta(minutes=2), description="How long a new key may take to start authenticating."
    )
    vault_retry_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="How long a step rides out Vault being unreachable, sealed or failing (with backoff).",
    )
    aws_retry_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="How long a step rides out AWS throttling, failing or being unreachable (with backoff).",
    )
    aws_max_attempts: int = Field(default=10, ge=1, le=50, description="botocore attempts for transient AWS errors.")
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL"),
        description="An endpoint override (moto, a proxy): not real AWS, whose last-used data arrives hours late.",
    )
    role_name: str = Field(
        default="OrganizationAccountAccessRole",
        min_length=1,
        max_length=64,
        description="The role keyrotor assumes in a member account (not in the caller's own account).",
    )
    external_id: str | None = Field(
        default=None, description="The external id the member role's trust policy asks for."
    )
    account_concurrency: int = Field(default=8, ge=1, le=64, description="Accounts audited at once.")
    accept_unsafe_quiet_period: bool = Field(
        default=False,
        description="Allow a quiet period of 0s, or (on real AWS) shorter than AWS's last-used latency of 4h.",
    )
    trail_regions: Regions = Field(
        default=("us-east-1",),
        description="Regions whose CloudTrail is read for a key's consumers, besides the region it was last used in "
        "(comma-separated); AWS records IAM and global STS calls in us-east-1.",
    )
    owner_fallback: str = Field(
        default="", max_length=256, description="Who notices name as the owner of a user without the owner tag."
    )
    rotation_cooldown: Duration = Field(
        default=timedelta(days=1),
        description="Refuse (without --force) to rotate a key that keyrotor's last rotation created this recently.",
    )
    delete_deployment: str = Field(
        default=DELETE.full_name,
        description="Deployment that deletes an old key after its grace period.",
    )

    @model_validator(mode="after")
    def _apply_timing_overrides(self) -> Settings:
        overrides = {
            "quiet_period": self.quiet_period,
            "poll_interval": self.poll_interval,
            "max_wait": self.max_wait,
            "grace_period": self.grace_period,
        }
        given = {name: value for name, value in overrides.items() if value is not None}
        if given:
            self.timings = Timings.model_validate(self.timings.model_dump() | given)
        return self

    @property
    def real_aws(self) -> bool:
        """Whether keyrotor talks to AWS itself (no endpoint override)."""
        return not self.aws_endpoint_url

    def token(self) -> str | None:
        """The Vault token from the environment, else from ``~/.vault-token``."""
        if self.vault_token is not None:
            return self.vault_token.get_secret_value()
        token_file = Path.home() / ".vault-token"
        return token_file.read_text().strip() if token_file.is_file() else None
