"""Rotation steps and the lease against in-memory IAM and Vault: the branches the real servers rarely take."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from prefect.logging import disable_run_logger

from keyrotor.adapters.lease import Holder, Lease
from keyrotor.adapters.records import RotationRecords, UserPaths, WaitingIndex
from keyrotor.core.errors import AwsError, PreconditionFailed, RotationConflict, VerificationFailed
from keyrotor.core.model import KeyStatus, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.core.timings import Timings
from keyrotor.settings import Settings
from keyrotor.tasks.context import RotationContext
from keyrotor.tasks.keys import create_new_key, deactivate_old_key, delete_deactivated_key, verify_new_key
from keyrotor.tasks.vault import publish_new_key
from tests.unit.fakes import FakeClock, FakeIam, FakeKV


@pytest.fixture(autouse=True)
def _no_run_logger() -> Iterator[None]:
    with disable_run_logger():
        yield


def context(iam: FakeIam, kv: FakeKV, user: str = "alice") -> RotationContext:
    paths = UserPaths.build("aws/{account_id}/{user_name}", "keyrotor/{account_id}/{user_name}", "123", user)
    settings = Settings(verify_timeout=timedelta(seconds=0.3), vault_token=None)
    waiting = WaitingIndex(kv, settings.waiting_path)
    return RotationContext(user, "123", iam, RotationRecords(kv, paths), waiting, settings, actor="test")


def started(ctx: RotationContext, old_key_id: str | None) -> RotationState:
    keys = tuple(key.key_id for key in ctx.iam.list_keys(ctx.user_name))
    state = RotationState(
        "r1",
        ctx.user_name,
        "123",
        Phase.STARTED,
        Timings(grace_period=timedelta(0)),
        utcnow(),
        "test",
        old_key_id=old_key_id,
        keys_before=keys,
    )
    return ctx.save(state)


def test_a_key_that_never_verifies_is_deleted_and_the_rotation_fails_cleanly() -> None:
    iam, kv = FakeIam(verifies=False), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = create_new_key.fn(ctx, started(ctx, old))
    with pytest.raises(VerificationFailed, match="never authenticated"):
        verify_new_key.fn(ctx, state)
    assert [key.key_id for key in iam.list_keys("alice")] == [old]
    assert ctx.records.stashed() is None
    recorded = ctx.records.load_state()
    assert recorded is not None and recorded.error is not None and state.new_key_id is not None
    assert recorded.phase is Phase.FAILED and state.new_key_id in recorded.error


def test_create_deletes_an_orphan_whose_secret_was_lost() -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = started(ctx, old)
    orphan = iam.create_key("alice")  # a crash right after CreateAccessKey: never stashed
    created = create_new_key.fn(ctx, state)
    assert {key.key_id for key in iam.list_keys("alice")} == {old, created.new_key_id}
    assert created.new_key_id != orphan.key_id


def test_create_adopts_the_key_stashed_before_a_crash() -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = started(ctx, old)
    stashed = iam.create_key("alice")  # a crash after the stash, before the state was saved
    ctx.records.stash(stashed)
    created = create_new_key.fn(ctx, state)
    assert created.new_key_id == stashed.key_id and created.phase is Phase.CREATED
    assert len(iam.list_keys("alice")) == 2


def test_deactivate_refuses_when_vault_names_another_key() -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = publish_new_key.fn(ctx, verify_new_key.fn(ctx, create_new_key.fn(ctx, started(ctx, old))))
    kv.write(ctx.records.paths.secret, {"aws_access_key_id": "AKIASOMEONEELSE", "aws_secret_access_key": "x"}, None)
    with pytest.raises(RotationConflict, match="not deactivating"):
        deactivate_old_key.fn(ctx, state)
    assert iam.users["alice"][old].active


def test_delete_refuses_an_old_key_someone_reactivated() -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = publish_new_key.fn(ctx, verify_new_key.fn(ctx, create_new_key.fn(ctx, started(ctx, old))))
    state = deactivate_old_key.fn(ctx, state)
    iam.set_status("alice", old, KeyStatus.ACTIVE)
    with pytest.raises(PreconditionFailed, match="Active again"):
        delete_deactivated_key.fn(ctx, state)
    assert old in iam.users["alice"]


def test_publish_records_the_previous_version_for_rollback() -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    kv.write(ctx.records.paths.secret, {"aws_access_key_id": old, "aws_secret_access_key": "s"}, cas=0)
    state = publish_new_key.fn(ctx, verify_new_key.fn(ctx, create_new_key.fn(ctx, started(ctx, old))))
    assert state.previous_secret_version == 1 and state.published_version == 2
    published = ctx.records.published()
    assert published is not None and published.key_id == state.new_key_id


def lease(records: RotationRecords, clock: FakeClock, holder: str) -> Lease:
    """A lease held by a process on another machine: only its renewals show it alive."""
    return Lease(
        records.lease, holder=Holder(holder, "elsewhere", 1), ttl=timedelta(seconds=30), clock=clock, sleep=clock.sleep
    )


def test_a_second_run_refuses_while_the_owner_renews() -> None:
    clock, records = FakeClock(), context(FakeIam(), FakeKV()).records
    owner = lease(records, clock, "first")
    owner.acquire()
    clock.on_sleep.append(owner.renew)  # the owner's heartbeat keeps going while the contender waits
    start = clock.now
    with pytest.raises(RotationConflict, match="already running"):
        lease(records, clock, "second").acquire()
    assert clock.now - start < timedelta(seconds=30), "refused at the first renewal seen, before the TTL"


def test_a_dead_owner_is_taken_over_within_one_ttl() -> None:
    clock, records = FakeClock(), context(FakeIam(), FakeKV()).records
    lease(records, clock, "first").acquire()  # then dies: never renews
    start = clock.now
    contender = lease(records, clock, "second")
    contender.acquire()
    assert timedelta(seconds=30) <= clock.now - start <= timedelta(seconds=31)
    contender.assert_held()
    record = records.lease.read_lease()
    assert record is not None and record.data.holder == "second"


def test_a_lease_taken_over_is_known_lost() -> None:
    clock, records = FakeClock(), context(FakeIam(), FakeKV()).records
    first = lease(records, clock, "first")
    first.acquire()
    clock.sleep(31)
    lease(records, clock, "second").acquire()
    first.renew()
    with pytest.raises(RotationConflict):
        first.assert_held()


def test_an_sts_outage_during_verification_keeps_the_new_key_for_the_next_run() -> None:
    """Only an answer that says the credentials are wrong counts against the key: throttling, 5xx and dropped
    connections until the verify timeout leave the key (and its stashed secret) for the next run."""
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = create_new_key.fn(ctx, started(ctx, old))
    iam.sts_down = True
    with pytest.raises(AwsError, match="could not verify the new key .* It is kept"):
        verify_new_key.fn(ctx, state)
    assert {key.key_id for key in iam.list_keys("alice")} == {old, state.new_key_id}
    recorded = ctx.records.load_state()
    assert ctx.records.stashed() is not None and recorded is not None and recorded.phase is Phase.CREATED
    iam.sts_down = False
    assert verify_new_key.fn(ctx, recorded).phase is Phase.VERIFIED


def test_an_answer_lost_after_create_access_key_leaves_no_key_without_its_secret() -> None:
    """IAM created the key but the answer never arrived: that key is found and deleted, and a new one created."""
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    iam.lost_create_answers = 1
    state = create_new_key.fn(ctx, started(ctx, old))
    keys = {key.key_id for key in iam.list_keys("alice")}
    assert keys == {old, state.new_key_id}, "exactly the old key and the one whose secret is stashed"
    stashed = ctx.records.stashed()
    assert stashed is not None and stashed.key_id == state.new_key_id


def test_a_state_write_whose_answer_was_lost_is_recognised_as_its_own() -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    state = started(ctx, old)
    kv.lost_answers = 1
    saved = ctx.save(replace(state, phase=Phase.CREATED))
    recorded = ctx.records.load_state()
    assert recorded is not None and saved.version == recorded.version and recorded.phase is Phase.CREATED


def test_a_lease_write_whose_answer_was_lost_is_taken_not_waited_for() -> None:
    iam, kv = FakeIam(), FakeKV()
    iam.add_user("alice")
    ctx = context(iam, kv)
    lease = Lease(ctx.records.lease, holder=Holder.this_process("test"), ttl=timedelta(seconds=60))
    kv.lost_answers = 1
    lease.acquire()
    lease.assert_held()
    kv.lost_answers = 1
    lease.renew()
    lease.assert_held()
