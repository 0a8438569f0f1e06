"""A crash at every step of a rotation and of a rollback, then the same steps run again: every run ends the same way,
and no application that reads Vault is ever refused. The steps run against in-memory IAM and Vault, so the whole
matrix takes milliseconds; ``tests/integration/flows/test_crash_resume.py`` kills a real process at a few of the
same points (the orphan key, the secret published but not recorded, the old key deactivated but not recorded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from prefect.logging import disable_run_logger

from keyrotor import failpoints
from keyrotor.adapters.records import RotationRecords, UserPaths, WaitingIndex
from keyrotor.core.inputs import RotationRequest
from keyrotor.core.model import KeyStatus, Phase, RotationState
from keyrotor.settings import Settings
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.preflight import start_rotation
from keyrotor.tasks.rollback import new_key_needs_wait, restore_old_key, retire_new_key, start_rollback
from keyrotor.tasks.rotation import introduce_new_key, retire_old_key
from tests.unit.fakes import FakeIam, FakeKV

ROTATION_POINTS = [
    "saved-started",
    "after-create-key",  # key created in IAM, its secret not yet saved anywhere: an orphan to clean up
    "after-stash",
    "saved-created",
    "saved-verified",
    "after-publish",  # secret published, state not yet updated
    "saved-published",
    "after-deactivate",  # old key inactive, state not yet updated
    "saved-deactivated",
    "after-delete",  # old key deleted, state not yet updated
    "saved-completed",
]
ACCOUNT = "123456789012"
ROLLBACK_POINTS = ["saved-rolling_back", "rollback-reactivated", "rollback-restored", "rollback-deactivated"]


class Crash(BaseException):
    """The process died here (a BaseException: no step catches it, as none survives a SIGKILL)."""


@dataclass
class Account:
    """One user's keys in IAM and records in Vault, and an application that reads Vault before every call."""

    iam: FakeIam
    kv: FakeKV
    ctx: RotationContext
    refused: list[str]

    def call(self) -> None:
        """The application signs a request with the key Vault names: refused if that key is not active."""
        published = self.ctx.records.published()
        if published is None or published.key_id is None:
            return
        key = next((k for k in self.iam.list_keys("alice") if k.key_id == published.key_id), None)
        if key is None or not key.active:
            self.refused.append(published.key_id)


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    paths = UserPaths.build("aws/{account_id}/{user_name}", "keyrotor/{account_id}/{user_name}", ACCOUNT, "alice")
    settings = Settings(vault_token=None, verify_timeout=timedelta(seconds=0.3))
    ctx = RotationContext(
        "alice", ACCOUNT, iam, RotationRecords(kv, paths), WaitingIndex(kv, settings.waiting_path), settings, "test"
    )
    ctx.records.publish(iam.credentials(old), cas=0)  # applications read the old key from Vault
    here = Account(iam, kv, ctx, [])
    for name in ("set_status", "delete_key"):  # the application calls AWS after every change to a key
        monkeypatch.setattr(iam, name, calling_after(getattr(iam, name), here))

    def crash(name: str) -> None:
        raise Crash(name)

    monkeypatch.setattr(failpoints, "crash", crash)
    with disable_run_logger():
        yield here


def calling_after(change: Callable[..., None], account: Account) -> Callable[..., None]:
    def changed(*args: object) -> None:
        change(*args)
        account.call()

    return changed


def rotate(ctx: RotationContext) -> RotationState:
    """The rotation's steps as the flow chains them; the old key is quiet at once (the application switched at the
    publish, as it reads Vault before every call)."""
    request = RotationRequest.parse({"user_name": "alice", "quiet_period": "1s", "grace_period": "0s"})
    state = start_rotation.fn(ctx, request)
    if not state.phase.reached(Phase.PUBLISHED):
        state = introduce_new_key.fn(ctx, state)
    ctx.records.discard_stash()
    return retire_old_key.fn(ctx, state) if not state.phase.terminal else state


def roll_back(ctx: RotationContext, now: bool = True) -> RotationState:
    """The rollback's steps as the flow chains them (the new key deactivated at once: the wait is the waker's)."""
    recorded = ctx.records.load_state()
    assert recorded is not None
    state = start_rollback.fn(ctx, recorded, now)
    if state.phase is Phase.ROLLING_BACK:
        state = retire_new_key.fn(ctx, restore_old_key.fn(ctx, state))
    return state


def crash_at(point: str, monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> None:
    """Run ``run`` with the failpoint ``point`` set: it must die there, as a killed process would; then clear it."""
    monkeypatch.setenv(failpoints.ENV, point)
    with pytest.raises(Crash):
        run()
    monkeypatch.delenv(failpoints.ENV)


@pytest.mark.parametrize("point", ROTATION_POINTS)
def test_a_rotation_killed_at_any_step_ends_the_same_when_run_again(
    point: str, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = account.iam.list_keys("alice")[0].key_id
    crash_at(point, monkeypatch, lambda: rotate(account.ctx))
    ended = rotate(account.ctx) if point != "saved-completed" else account.ctx.records.load_state()
    assert ended is not None and ended.phase is Phase.COMPLETED
    keys = account.iam.list_keys("alice")
    published = account.ctx.records.published()
    assert [key.key_id for key in keys] == [published.key_id if published else None] and keys[0].active
    assert keys[0].key_id != old and ended.new_key_id == keys[0].key_id
    assert account.ctx.records.stashed() is None, "the unpublished copy of the secret must not linger"
    assert account.refused == [], "no application was refused"


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_a_rollback_killed_at_any_step_ends_the_same_when_run_again(
    point: str, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = account.iam.list_keys("alice")[0].key_id
    request = RotationRequest.parse({"user_name": "alice", "quiet_period": "1s", "grace_period": "0s"})
    state = introduce_new_key.fn(account.ctx, start_rotation.fn(account.ctx, request))  # published: apps moved
    crash_at(point, monkeypatch, lambda: roll_back(account.ctx))
    ended = roll_back(account.ctx)
    assert ended.phase is Phase.ROLLED_BACK and ended.rollback is not None
    assert ended.rollback.new_key_deactivated_at is not None and ended.rollback.new_key_deleted_at is not None
    keys = {key.key_id: key.status for key in account.iam.list_keys("alice")}
    assert keys == {old: KeyStatus.ACTIVE}, f"the new key {state.new_key_id} is deleted (grace period 0s)"
    published = account.ctx.records.published()
    assert published is not None and published.key_id == old
    assert account.kv.current_version(account.ctx.records.paths.secret) == 3, "one publish, exactly one restore"
    assert account.refused == []


@pytest.mark.parametrize("point", ["saved-created", "saved-verified"])
def test_a_rotation_killed_before_its_publish_rolls_back_without_waiting(
    point: str, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No application ever read the new key: the rollback needs no quiet period before it deactivates it."""
    old = account.iam.list_keys("alice")[0].key_id
    crash_at(point, monkeypatch, lambda: rotate(account.ctx))
    recorded = account.ctx.records.load_state()
    assert recorded is not None and recorded.new_key_id is not None
    assert not new_key_needs_wait(account.ctx, start_rollback.fn(account.ctx, recorded, False))
    ended = roll_back(account.ctx, now=False)
    assert ended.phase is Phase.ROLLED_BACK
    assert {key.key_id: key.status for key in account.iam.list_keys("alice")} == {old: KeyStatus.ACTIVE}
    assert account.ctx.records.stashed() is None and account.refused == []
