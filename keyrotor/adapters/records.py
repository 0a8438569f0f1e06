"""A user's records in Vault: the secret applications read, and keyrotor's own state, lease and stash.

Layout on the KV mount (paths are settings):
    {vault_path}              aws_access_key_id, aws_secret_access_key: what applications read
    {state_path}/state        the rotation's durable state; its version history is the audit trail
    {state_path}/lease        who is running the rotation now, and until when
    {state_path}/pending      the new key between its creation and its publication (destroyed after)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from pydantic import SecretStr, ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from keyrotor.adapters.vault import KVRecord, KVStore
from keyrotor.core.errors import PreconditionFailed, RotationConflict, VaultError, VaultUnavailable
from keyrotor.core.model import LeaseData, NewCredentials, Pause, RotationState, Wait, from_record, to_record
from keyrotor.core.timestamps import utcnow

T = TypeVar("T")
ID_FIELD = "aws_access_key_id"
SECRET_FIELD = "aws_secret_access_key"
STATE_HISTORY = 1000


@dataclass(frozen=True)
class UserPaths:
    """Where one user's records live on the KV mount."""

    secret: str
    state: str
    lease: str
    pending: str

    @classmethod
    def build(cls, vault_path: str, state_path: str, account_id: str, user_name: str) -> UserPaths:
        fields = {"account_id": account_id, "user_name": user_name}
        folder = state_path.format(**fields).rstrip("/")
        return cls(
            secret=vault_path.format(**fields),
            state=f"{folder}/state",
            lease=f"{folder}/lease",
            pending=f"{folder}/pending",
        )


@dataclass(frozen=True)
class Published:
    """Which key the secret path names, without its secret."""

    key_id: str | None
    version: int
    created_time: str


@dataclass(frozen=True)
class StoredLease:
    """A lease as read from Vault, with the version a check-and-set write must name."""

    data: LeaseData
    version: int


class LeaseStore(Protocol):
    """Where a lease lives: one KV path read and written with check-and-set."""

    def read_lease(self) -> StoredLease | None: ...

    def write_lease(self, lease: LeaseData, cas: int) -> int: ...


class LeaseRecord:
    """A lease at one KV path: a user's rotation lease, or the waker's."""

    def __init__(self, kv: KVStore, path: str) -> None:
        self.kv = kv
        self.path = path

    def read_lease(self) -> StoredLease | None:
        record = self.kv.read(self.path)
        if record is None:
            return None
        try:
            return StoredLease(from_record(LeaseData, record.data), record.version)
        except ValidationError:  # an unreadable lease protects nothing: it is taken over like an expired one
            return StoredLease(LeaseData(owner=None), record.version)

    def write_lease(self, lease: LeaseData, cas: int) -> int:
        """Write the lease (check-and-set); returns the version written."""
        return self.kv.write(self.path, to_record(lease), cas=cas).version


class RotationRecords:
    """Reads and writes one user's records. Secrets only ever pass through, never returned in plain form."""

    def __init__(self, kv: KVStore, paths: UserPaths) -> None:
        self.kv = kv
        self.paths = paths
        self.lease = LeaseRecord(kv, paths.lease)

    # --- the secret applications read ---------------------------------------------------------------
    def published(self) -> Published | None:
        record = self.kv.read(self.paths.secret)
        if record is None:
            return None
        return Published(record.data.get(ID_FIELD), record.version, record.created_time)

    def published_credentials(self, version: int | None = None) -> NewCredentials | None:
        return _credentials(self.kv.read(self.paths.secret, version))

    def publish(self, credentials: NewCredentials, cas: int) -> Published:
        """Write ``credentials`` as the secret's next version over version ``cas`` (check-and-set).

        A write whose answer was lost (an outage after it landed, or the retry meeting its own write as a
        conflict) is not an error: the secret naming this key afterwards proves it landed.
        """
        try:
            record = self.kv.write(self.paths.secret, _fields(credentials), cas=cas)
        except (RotationConflict, VaultUnavailable):
            landed = self.published()
            if landed is None or landed.key_id != credentials.key_id:
                raise
            return landed
        return Published(credentials.key_id, record.version, record.created_time)

    # --- the new key before it is published ---------------------------------------------------------
    def stash(self, credentials: NewCredentials) -> None:
        self.kv.write(self.paths.pending, _fields(credentials), cas=None)

    def stashed(self) -> NewCredentials | None:
        return _credentials(self.kv.read(self.paths.pending))

    def discard_stash(self) -> None:
        self.kv.destroy(self.paths.pending)

    # --- durable state ------------------------------------------------------------------------------
    def load_state(self) -> RotationState | None:
        """The user's rotation record, None when there is none; PreconditionFailed when it cannot be read."""
        record = self.kv.read(self.paths.state)
        if record is None:
            return None
        try:
            return from_record(RotationState, record.data, record.version)
        except (TypeError, ValueError, KeyError) as error:  # pydantic's ValidationError is a ValueError
            raise PreconditionFailed(
                f"the rotation record {self.kv.mount}/{self.paths.state} (version {record.version}) cannot be read "
                f"({type(error).__name__}: {error}); restore an earlier version or delete it"
            ) from None

    def save_state(self, state: RotationState, updated_by: str) -> RotationState:
        """Write ``state`` as the next version, failing with RotationConflict if anyone wrote in between.

        Each write carries a write id: when the answer to a write is lost and the retry meets the written record
        (check-and-set fails against it, or Vault stays unreachable), the record is read back, and if it is this
        write, the write succeeded.
        """
        stamped = replace(state, updated_at=utcnow(), updated_by=updated_by, write_id=uuid.uuid4().hex[:16])
        if state.version == 0 and self.kv.current_version(self.paths.state) == 0:
            self.kv.keep_versions(self.paths.state, STATE_HISTORY)
        cas = state.version if state.version else self.kv.current_version(self.paths.state)
        try:
            record = self.kv.write(self.paths.state, to_record(stamped), cas=cas)
        except (RotationConflict, VaultUnavailable):
            landed = self._own_write(self.paths.state, stamped.write_id)
            if landed is None:
                raise
            return replace(stamped, version=landed)
        return replace(stamped, version=record.version)

    def _own_write(self, path: str, write_id: str | None) -> int | None:
        """The version at ``path`` if it is the write ``write_id``, else None (also when Vault cannot say)."""
        try:
            current = self.kv.read(path)
        except VaultError:
            return None
        return current.version if current is not None and current.data.get("write_id") == write_id else None


def _fields(credentials: NewCredentials) -> dict[str, str]:
    return {ID_FIELD: credentials.key_id, SECRET_FIELD: credentials.secret.get_secret_value()}


def _credentials(record: KVRecord | None) -> NewCredentials | None:
    if record is None or ID_FIELD not in record.data or SECRET_FIELD not in record.data:
        return None
    return NewCredentials(record.data[ID_FIELD], SecretStr(record.data[SECRET_FIELD]))


class WaitingIndex:
    """Vault's index of parked rotations (``KEYROTOR_WAITING_PATH``), one :class:`~keyrotor.core.model.Wait` per user.

    A rotation writes its record when it parks and deletes it when it moves on; the waker lists the index, checks
    the due ones and records each look. Writes are check-and-set, so neither overwrites the other's newer record.
    """

    def __init__(self, kv: KVStore, template: str) -> None:
        self.kv = kv
        self.template = template

    def path(self, account_id: str, user_name: str) -> str:
        return self.template.format(account_id=account_id, user_name=user_name)

    def folder(self, account_id: str) -> str:
        return self.path(account_id, "").rstrip("/")

    def root(self) -> str:
        return self.template.split("{account_id}")[0].rstrip("/")

    def accounts(self) -> list[str]:
        return [name.rstrip("/") for name in self.kv.list(self.root()) if name.endswith("/")]

    def users(self, account_id: str) -> list[str]:
        return [name for name in self.kv.list(self.folder(account_id)) if not name.endswith("/")]

    def read(self, account_id: str, user_name: str) -> Wait | None:
        record = self.kv.read(self.path(account_id, user_name))
        return from_record(Wait, record.data, record.version) if record else None

    def write(self, wait: Wait) -> Wait:
        """Write ``wait`` over the version it was read as (0: a new record); RotationConflict if it changed (unless
        the record found is this very write, whose answer was lost)."""
        path = self.path(wait.account_id, wait.user_name)
        cas = wait.version if wait.version else self.kv.current_version(path)
        try:
            written = self.kv.write(path, to_record(wait), cas=cas)
        except (RotationConflict, VaultUnavailable):
            current = self.kv.read(path)
            if current is None or current.data != to_record(wait):
                raise
            return replace(wait, version=current.version)
        return replace(wait, version=written.version)

    def remove(self, account_id: str, user_name: str, wait_id: str | None = None) -> None:
        """Delete the user's record (only if it is ``wait_id``'s, when given): the rotation stopped waiting."""
        if wait_id is not None:
            current = self.read(account_id, user_name)
            if current is None or current.wait_id != wait_id:
                return
        self.kv.destroy(self.path(account_id, user_name))

    def hold(self, account_id: str, user_name: str, held: bool) -> Wait | None:
        """Mark the user's record held (an operator paused it) or not; None when it has none."""

        def attempt() -> Wait | None:
            current = self.read(account_id, user_name)
            if current is None or current.held == held:
                return current
            return self.write(replace(current, held=held))

        return _while_records_change(attempt, f"the waiting record of {user_name!r}", tries=3)


def _while_records_change(attempt: Callable[[], T], what: str, tries: int) -> T:
    """Run a read-then-write ``attempt`` again while a concurrent writer wins the check-and-set (no wait: the next
    read sees the other write); RotationConflict after ``tries``."""
    retrying = Retrying(retry=retry_if_exception_type(RotationConflict), stop=stop_after_attempt(tries), reraise=True)
    try:
        return retrying(attempt)
    except RotationConflict:
        raise RotationConflict(f"{what} kept changing; try again") from None


def hold_rotation(records: RotationRecords, waiting: WaitingIndex, pause: Pause, actor: str) -> RotationState | None:
    """Record that ``pause.run_id``, which carries the user's rotation, is paused: in the durable state
    (check-and-set, retried) and, if the rotation is parked, in the waiting index. From outside the run (``keyrotor
    pause``, the waker fixing a UI pause) or after it let go of the lease. A no-op for an ended rotation."""

    def attempt() -> RotationState | None:
        state = records.load_state()
        if state is None or state.phase.terminal or (state.pause and state.pause.run_id == pause.run_id):
            return state
        return records.save_state(replace(state, pause=pause), actor)

    state = _while_records_change(attempt, f"the rotation record of {records.paths.state}", tries=5)
    if state is not None and not state.phase.terminal:
        waiting.hold(state.account_id, state.user_name, held=True)
    return state
