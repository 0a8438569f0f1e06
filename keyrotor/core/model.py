"""Value objects: IAM keys, last-used evidence, the new credentials, and the durable records of a rotation.

Every record is a frozen dataclass with typed fields; one pydantic ``TypeAdapter`` per record turns it into the
JSON kept in Vault and back (:func:`to_record`, :func:`from_record`), so no code reads a record by string keys.
Change a record with ``dataclasses.replace``, which mypy checks field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import SecretStr, TypeAdapter

from keyrotor.core.durations import Duration
from keyrotor.core.timings import Timings


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
    ROLLING_BACK = "rolling_back"  # old key active and back in Vault; waiting for the new key to go unused
    ROLLED_BACK = "rolled_back"  # old key active and in Vault, new key inactive (deleted after the grace period)

    @property
    def rank(self) -> int:
        return _PHASE_ORDER.index(self)

    @property
    def terminal(self) -> bool:
        return self in _ENDINGS

    def reached(self, other: Phase) -> bool:
        """True when this phase is ``other`` or later in the procedure (endings other than completed never are)."""
        return self not in _ENDINGS - {Phase.COMPLETED} and self is not Phase.ROLLING_BACK and self.rank >= other.rank


_PHASE_ORDER = list(Phase)
_ENDINGS = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.REJECTED, Phase.ROLLED_BACK})


class RotationKind(StrEnum):
    """What a record carries out."""

    ROTATION = "rotation"  # create a new key, move applications to it, retire the old one
    RETIREMENT = "retirement"  # retire one key of two (or an unused key) without creating another


class PauseKind(StrEnum):
    """Who or what paused a rotation, which decides what resumes it."""

    OPERATOR = "operator"  # keyrotor pause, or the pause-rotation deployment
    PREFECT = "prefect"  # the Prefect UI's Pause (Suspend) on a running run
    APPROVAL = "approval"  # the approval gate: resumed by an answer, approve or reject


class Quiet(StrEnum):
    """Outcome of one look at the key being waited on: quiet long enough, not yet, or at the deadline."""

    QUIET = "quiet"
    WAIT = "wait"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class Look:
    """One look at the key being waited on: when, its last use, and what was decided."""

    at: datetime
    last_used: LastUsed
    outcome: Quiet


@dataclass(frozen=True)
class Pause:
    """A rotation held by an operator, the Prefect UI or the approval gate: the flow run to resume, and why."""

    run_id: str
    at: datetime
    kind: PauseKind
    reason: str


class Answer(StrEnum):
    """An operator's answer to the approval gate."""

    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class Approval:
    """How the approval gate was answered: the answer, the note, who answered and when."""

    answer: Answer
    note: str
    answered_by: str
    answered_at: datetime


@dataclass(frozen=True)
class Rollback:
    """A rollback: a rotation in reverse. The old key is active and back in Vault at once; the new key stays
    Active until it has gone unused for the quiet period (or at once, with ``now``), then it is deactivated, and
    deleted after the grace period.

    Attributes:
        started_at: When the rollback was recorded (no rotation run continues the rotation after that).
        from_phase: The rotation's phase when it was rolled back.
        now: The operator asked to deactivate the new key at once (a leaked key).
        restored_at: The old key was active and the secret restored in Vault (applications can move back).
        vault: What happened in Vault, for people.
        new_key_kept: Vault held no secret before the rotation, so it still names the new key, which stays active.
        cancelled_runs: The flow runs cancelled (scheduled deletion, a paused or parked rotation run).
        wait_deadline: The wait for the new key to go unused stops here (both keys stay active).
        new_key_deactivated_at: When the new key was made Inactive.
        delete_after: When the new key may be deleted (the grace period after its deactivation).
        deletion_run_id: The scheduled flow run that deletes it.
        new_key_deleted_at: When the new key was deleted.
    """

    started_at: datetime
    from_phase: Phase
    now: bool = False
    restored_at: datetime | None = None
    vault: str | None = None
    new_key_kept: bool = False
    cancelled_runs: tuple[str, ...] = ()
    wait_deadline: datetime | None = None
    new_key_deactivated_at: datetime | None = None
    delete_after: datetime | None = None
    deletion_run_id: str | None = None
    new_key_deleted_at: datetime | None = None


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
    timings: Timings
    started_at: datetime
    started_by: str
    kind: RotationKind = RotationKind.ROTATION
    requested_at: datetime | None = None  # when it was due: the run's scheduled time (the cooldown counts from it)
    old_key_id: str | None = None
    new_key_id: str | None = None  # a retirement's "new" key is the key it keeps, if any
    keys_before: tuple[str, ...] = ()
    flow_run_id: str | None = None
    created_at: datetime | None = None
    verified_at: datetime | None = None
    published_at: datetime | None = None
    previous_secret_version: int | None = None
    published_version: int | None = None
    wait_deadline: datetime | None = None
    halted: str | None = None  # why it stopped at its wait deadline, both keys active
    last_used: LastUsed | None = None  # the evidence it stopped (or was approved) on
    pause: Pause | None = None
    approval: Approval | None = None
    deactivated_at: datetime | None = None
    delete_after: datetime | None = None
    deletion_run_id: str | None = None
    completed_at: datetime | None = None
    error: str | None = None
    rollback: Rollback | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    last_flow_run_id: str | None = None
    notified: tuple[str, ...] = ()  # the notices sent about this rotation (keyrotor.core.notices), each sent once
    write_id: str | None = None  # unique per write: a writer recognises its own write after an answer lost
    version: int = field(default=0, compare=False)

    @property
    def retirement(self) -> bool:
        """True when this record retires a key (no new key was created; ``new_key_id`` is the key kept, if any)."""
        return self.kind is RotationKind.RETIREMENT

    def run_ids(self) -> set[str]:
        """The flow runs that carry or carried this rotation: the current one, the last one, the paused one."""
        paused = self.pause.run_id if self.pause else None
        return {run for run in (self.flow_run_id, self.last_flow_run_id, paused) if run}

    def to_json(self) -> dict[str, Any]:
        """The rotation's outcome for people and scripts: the record and its version (no secrets: it holds none)."""
        return to_record(self) | {"version": self.version}


@dataclass(frozen=True)
class Wait:
    """A rotation parked while it waits for a key to go quiet (the old key; a rollback's new key): its flow run
    is suspended (holding no process), and the waker checks the key's last use at ``next_check_at`` and resumes
    the run once it can move on. Stored in Vault's waiting index, one record per user; ``version`` is its KV
    version.

    Attributes:
        wait_id: This park's pause key in Prefect (each park of a run has its own).
        flow_run_id: The suspended flow run to resume.
        key_id: The key waited on.
        since: When the wait started (the publish; a rollback's restore): the quiet period counts from here.
        held: An operator paused the rotation: the waker leaves it alone until it is resumed.
        last_check: The last look at the key.
        prefect_api: The Prefect server the suspended run lives on: only its wakers resume it.
    """

    rotation_id: str
    user_name: str
    account_id: str
    flow_run_id: str
    wait_id: str
    key_id: str
    since: datetime
    quiet_period: Duration
    poll_interval: Duration
    wait_deadline: datetime
    next_check_at: datetime
    parked_at: datetime
    held: bool = False
    last_check: Look | None = None
    prefect_api: str = ""
    version: int = field(default=0, compare=False)


@dataclass(frozen=True)
class LeaseData:
    """Who holds a lease (a user's rotation, or the waker's) and until when, as kept in Vault.

    ``owner`` is None once released. ``host`` and ``pid`` say where the holder runs, so a process on the same
    machine can tell a dead holder at once; ``holder`` is for people.
    """

    owner: str | None
    holder: str | None = None
    host: str | None = None
    pid: int | None = None
    flow_run_id: str | None = None
    acquired_at: datetime | None = None
    renewed_at: datetime | None = None
    expires_at: datetime | None = None
    released_at: datetime | None = None
    last_holder: str | None = None


R = TypeVar("R")
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(kind: type[R]) -> TypeAdapter[R]:
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def to_record(value: Any) -> dict[str, Any]:
    """A record as the JSON kept in Vault (datetimes in ISO 8601, durations as ``1d``), without its ``version``."""
    record: dict[str, Any] = _adapter(type(value)).dump_python(value, mode="json")
    record.pop("version", None)
    return record


def from_record(kind: type[R], record: dict[str, Any], version: int = 0) -> R:
    """Rebuild a record from Vault's JSON, ignoring fields a newer keyrotor may have added, and reading the shapes
    older keyrotors wrote. Raises pydantic's ``ValidationError`` when it cannot."""
    names = set(getattr(kind, "__dataclass_fields__", {}))
    values = {name: value for name, value in _upgrade(kind, record).items() if name in names and name != "version"}
    values["version"] = version
    return _adapter(kind).validate_python(values)


def _upgrade(kind: type[Any], record: dict[str, Any]) -> dict[str, Any]:
    """Records written by keyrotor before these types (flat pause fields, a rollback as a loose dict, the waiting
    index naming the old key): read them as what they meant."""
    record = dict(record)
    if kind is RotationState:
        if record.get("paused_run_id") and not record.get("pause"):
            record["pause"] = {
                "run_id": record["paused_run_id"],
                "at": record.get("paused_at") or record.get("updated_at"),
                "kind": PauseKind.OPERATOR.value,
                "reason": record.get("pause_reason") or "paused",
            }
        old = record.get("rollback")
        if isinstance(old, dict) and "started_at" not in old and record.get("rollback_started_at"):
            record["rollback"] = {
                "started_at": record["rollback_started_at"],
                "from_phase": old.get("from_phase") or Phase.PUBLISHED.value,
                "vault": old.get("vault"),
                "new_key_kept": bool(old.get("new_key_kept")),
                "cancelled_runs": old.get("cancelled_runs") or [],
                "restored_at": record.get("rolled_back_at"),
                "new_key_deactivated_at": record.get("rolled_back_at"),
            }
        elif not isinstance(old, dict) or "started_at" not in old:
            record["rollback"] = None
    if kind is Wait and "key_id" not in record:
        record["key_id"] = record.get("old_key_id")
        record["since"] = record.get("published_at")
    return record
