"""Value objects: IAM keys, last-used evidence, the new credentials, and the durable rotation state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import SecretStr

from keyrotor.core.timestamps import iso_or_none


class KeyStatus(StrEnum):
    """IAM's two key states."""

    ACTIVE = "Active"
    INACTIVE = "Inactive"


@dataclass(frozen=True)
class AccessKey:
    """One IAM access key as ListAccessKeys reports it (no secret)."""

    key_id: str
    status: KeyStatus
    created: datetime

    @property
    def active(self) -> bool:
        return self.status is KeyStatus.ACTIVE


@dataclass(frozen=True)
class LastUsed:
    """GetAccessKeyLastUsed for one key; ``used_at`` is None when the key never signed a request."""

    key_id: str
    used_at: datetime | None
    service: str | None = None
    region: str | None = None

    def describe(self) -> str:
        if self.used_at is None:
            return f"{self.key_id} never used"
        return f"{self.key_id} last used {self.used_at.isoformat()} by {self.service or '?'} in {self.region or '?'}"

    def to_record(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "used_at": iso_or_none(self.used_at),
            "service": self.service,
            "region": self.region,
        }


@dataclass(frozen=True)
class NewCredentials:
    """A freshly created key pair. The secret is a ``SecretStr`` so no repr, log or traceback shows it."""

    key_id: str
    secret: SecretStr = field(repr=False)


class Phase(StrEnum):
    """Named phases of a rotation, in the order a person would follow them."""

    STARTED = "started"  # lock held, old key chosen, a free slot made
    CREATED = "created"  # new key exists; its secret is stashed in Vault, not yet published
    VERIFIED = "verified"  # the new key authenticated with STS
    PUBLISHED = "published"  # applications can read the new key from Vault; waiting for the old key to go quiet
    DEACTIVATED = "deactivated"  # old key inactive; deleted when the grace period ends
    COMPLETED = "completed"  # old key deleted (or there was none)
    FAILED = "failed"  # ended without change to the old key (e.g. the new key never verified)
    REJECTED = "rejected"  # an operator rejected the deactivation: both keys stay active
    ROLLED_BACK = "rolled_back"  # old key active and back in Vault, new key inactive

    @property
    def rank(self) -> int:
        return _PHASE_ORDER.index(self)

    @property
    def terminal(self) -> bool:
        return self in _ENDINGS

    def reached(self, other: Phase) -> bool:
        """True when this phase is ``other`` or later in the procedure (endings other than completed never are)."""
        return self not in _ENDINGS - {Phase.COMPLETED} and self.rank >= other.rank


_PHASE_ORDER = list(Phase)
_ENDINGS = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.REJECTED, Phase.ROLLED_BACK})


RETIREMENT = "retirement"


@dataclass(frozen=True)
class RotationState:
    """The durable record of one rotation, stored in Vault (KV v2) beside the secret.

    Every change is written with check-and-set, so KV's version history is the rotation's audit trail.
    ``version`` is the KV version this object was read or written as; it is not part of the record.
    """

    rotation_id: str
    user_name: str
    account_id: str
    phase: Phase
    timings: dict[str, float]
    started_at: datetime
    started_by: str
    old_key_id: str | None = None
    new_key_id: str | None = None
    keys_before: tuple[str, ...] = ()
    flow_run_id: str | None = None
    created_at: datetime | None = None
    verified_at: datetime | None = None
    published_at: datetime | None = None
    previous_secret_version: int | None = None
    published_version: int | None = None
    wait_deadline: datetime | None = None
    halted: str | None = None
    last_used: dict[str, Any] | None = None
    deactivated_at: datetime | None = None
    delete_after: datetime | None = None
    deletion_run_id: str | None = None
    completed_at: datetime | None = None
    error: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    last_flow_run_id: str | None = None
    paused_run_id: str | None = None
    paused_at: datetime | None = None
    pause_reason: str | None = None
    rollback_started_at: datetime | None = None
    rolled_back_at: datetime | None = None
    rollback: dict[str, Any] | None = None
    kind: str = "rotation"  # or "retirement": retire one key of two (or an unused key) without creating a new one
    write_id: str | None = None  # unique per write: a writer recognises its own write after an answer lost
    version: int = field(default=0, compare=False)

    @property
    def retirement(self) -> bool:
        """True when this record retires a key (no new key was created; ``new_key_id`` is the key kept, if any)."""
        return self.kind == RETIREMENT

    def timing(self, name: str) -> timedelta:
        return timedelta(seconds=self.timings[name])

    def evolve(self, **changes: Any) -> RotationState:
        return dataclasses.replace(self, **changes)

    def run_ids(self) -> set[str]:
        """The flow runs that carry or carried this rotation: the current one, the last one, the paused one."""
        return {run for run in (self.flow_run_id, self.last_flow_run_id, self.paused_run_id) if run}

    def report(self) -> dict[str, Any]:
        """The rotation's outcome for people and scripts: the record and its version (no secrets: it holds none)."""
        return self.to_record() | {"version": self.version}

    def to_record(self) -> dict[str, Any]:
        """The JSON-safe dict stored in Vault."""
        record: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "version":
                continue
            value = getattr(self, item.name)
            if isinstance(value, datetime):
                value = iso_or_none(value)
            elif isinstance(value, tuple):
                value = list(value)
            record[item.name] = value
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], version: int) -> RotationState:
        """Rebuild a state from its Vault record, ignoring fields a newer keyrotor may have added."""
        names = {item.name: item for item in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, value in record.items():
            if name not in names or name == "version":
                continue
            if name == "phase":
                value = Phase(value)
            elif name == "keys_before":
                value = tuple(value or ())
            elif name.endswith("_at") or name in ("wait_deadline", "delete_after"):
                value = _parse_time(value)
            values[name] = value
        return cls(**values, version=version)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Wait:
    """A rotation parked while it waits for its old key to go quiet: its flow run is suspended (holding no
    process), and the waker checks the old key's last use at ``next_check_at`` and resumes the run once it can
    move on. Stored in Vault's waiting index, one record per user; ``version`` is its KV version.

    Attributes:
        wait_id: This park's pause key in Prefect (each park of a run has its own).
        flow_run_id: The suspended flow run to resume.
        held: An operator paused the rotation: the waker leaves it alone until it is resumed.
        last_check: The waker's last look: when, the old key's last use, and the decision.
    """

    rotation_id: str
    user_name: str
    account_id: str
    flow_run_id: str
    wait_id: str
    old_key_id: str
    published_at: datetime
    quiet_period: float
    poll_interval: float
    wait_deadline: datetime
    next_check_at: datetime
    parked_at: datetime
    held: bool = False
    last_check: dict[str, Any] | None = None
    prefect_api: str = ""  # the Prefect server the suspended run lives on: only its wakers resume it
    version: int = field(default=0, compare=False)

    def evolve(self, **changes: Any) -> Wait:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        record = {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.name != "version"}
        return {name: iso_or_none(value) if isinstance(value, datetime) else value for name, value in record.items()}

    @classmethod
    def from_record(cls, record: dict[str, Any], version: int) -> Wait:
        names = {item.name for item in dataclasses.fields(cls)} - {"version"}
        values = {name: value for name, value in record.items() if name in names}
        for name in ("published_at", "wait_deadline", "next_check_at", "parked_at"):
            values[name] = datetime.fromisoformat(values[name])
        return cls(**values, version=version)
