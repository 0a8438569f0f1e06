"""Steps against IAM and STS: create and verify the new key, watch, deactivate and delete the old one."""

from __future__ import annotations

from dataclasses import replace
from typing import NoReturn

from prefect import get_run_logger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from keyrotor.control.consumers import rotation_consumers
from keyrotor.core.decisions import orphan_keys, slots_to_free
from keyrotor.core.errors import (
    AwsError,
    AwsUnavailable,
    CreateAnswerLost,
    KeyNotAccepted,
    KeyrotorError,
    PreconditionFailed,
    RotationConflict,
    StillInUse,
    TransientError,
    VerificationFailed,
)
from keyrotor.core.model import KeyStatus, LastUsed, NewCredentials, Phase, RotationState
from keyrotor.core.timestamps import utcnow
from keyrotor.failpoints import failpoint
from keyrotor.tasks import step
from keyrotor.tasks.context import RotationContext


@step("create-new-key")
def create_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Create the new key and stash its secret in Vault at once, so it is never lost.

    After a crash this step finds what the last run left: a stashed key it adopts, or an orphan (created but
    never stashed, its secret gone with the process) that it deletes before creating a fresh one.
    """
    if state.phase.reached(Phase.CREATED):
        return state
    logger = get_run_logger()
    keys = ctx.iam.list_keys(ctx.user_name)
    stashed = ctx.records.stashed()
    stashed_id = stashed.key_id if stashed else None
    adopted = next((key for key in keys if key.key_id == stashed_id and key.key_id not in state.keys_before), None)
    if adopted is not None:
        logger.info("Adopting new key %s, created and stashed before an interruption", adopted.key_id)
        return ctx.save(replace(state, phase=Phase.CREATED, new_key_id=adopted.key_id, created_at=adopted.created))
    orphans = orphan_keys(keys, state)
    for key_id in orphans:
        logger.warning("Deleting orphan key %s: created by an interrupted run, its secret was never saved", key_id)
        ctx.iam.delete_key(ctx.user_name, key_id)
    for key_id in slots_to_free([key for key in keys if key.key_id not in orphans], keep=state.old_key_id):
        logger.info("Deleting inactive key %s to free IAM's second key slot", key_id)
        ctx.iam.delete_key(ctx.user_name, key_id)

    credentials = _create_key(ctx, state)
    failpoint("after-create-key")
    try:
        ctx.records.stash(credentials)
    except KeyrotorError:
        ctx.iam.delete_key(ctx.user_name, credentials.key_id)
        raise
    failpoint("after-stash")
    logger.info(
        "Created new key %s for %r (secret stashed in Vault, not yet published)", credentials.key_id, ctx.user_name
    )
    return ctx.save(replace(state, phase=Phase.CREATED, new_key_id=credentials.key_id, created_at=utcnow()))


def _create_key(ctx: RotationContext, state: RotationState) -> NewCredentials:
    """CreateAccessKey, once at a time: after an answer lost on the way back, a key of ours may exist whose secret
    nobody received. It is found (not among the keys the rotation started with) and deleted before trying again,
    through an outage of up to the AWS retry timeout."""
    logger = get_run_logger()

    def delete_unreceived(retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        logger.warning("No clear answer to CreateAccessKey (%s); looking at the user's keys", error)
        try:
            for key_id in orphan_keys(ctx.iam.list_keys(ctx.user_name), state):
                logger.warning("Deleting key %s: created by that call, its secret never arrived", key_id)
                ctx.iam.delete_key(ctx.user_name, key_id)
        except AwsUnavailable as unavailable:
            logger.warning("AWS still unavailable (%s); trying again", unavailable)

    retrying = Retrying(
        retry=retry_if_exception_type(CreateAnswerLost),
        stop=stop_after_delay(ctx.settings.aws_retry_timeout.total_seconds()),
        wait=wait_exponential(multiplier=0.5, max=15),
        before_sleep=delete_unreceived,
        sleep=ctx.sleep,
        reraise=True,
    )
    return retrying(ctx.iam.create_key, ctx.user_name)


@step("verify-new-key")
def verify_new_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Prove the new key authenticates (``sts:GetCallerIdentity`` signed with it), retrying through IAM's delay.

    A key that never verifies is deleted, the rotation is recorded as failed, and the old key is untouched.
    """
    if state.phase.reached(Phase.VERIFIED):
        return state
    credentials = ctx.records.stashed()
    if credentials is None or credentials.key_id != state.new_key_id:
        _abandon_new_key(ctx, state, "the new key's stashed secret is missing from Vault")
    try:
        arn = _caller_arn_with_retries(ctx, credentials)
    except KeyNotAccepted as error:  # AWS kept saying the credentials are wrong: only that counts against the key
        _abandon_new_key(ctx, state, f"it never authenticated within {ctx.settings.verify_timeout} ({error})")
    except TransientError as error:  # STS unreachable or failing: nothing is known about the key; keep it
        raise AwsError(
            f"could not verify the new key {state.new_key_id} within {ctx.settings.verify_timeout}: {error}. "
            f"It is kept (its secret stashed in Vault); `keyrotor rotate {ctx.user_name}` verifies it and goes on"
        ) from None
    if not arn.endswith(f"/{ctx.user_name}"):
        _abandon_new_key(ctx, state, f"it authenticates as {arn}, not as user {ctx.user_name!r}")
    get_run_logger().info("New key %s authenticates as %s", state.new_key_id, arn)
    return ctx.save(replace(state, phase=Phase.VERIFIED, verified_at=utcnow()))


def _caller_arn_with_retries(ctx: RotationContext, credentials: NewCredentials) -> str:
    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_delay(ctx.settings.verify_timeout.total_seconds()),
        wait=wait_exponential(multiplier=0.5, max=8),
        sleep=ctx.sleep,
        reraise=True,
    )
    return retrying(ctx.iam.caller_arn, credentials)


def _abandon_new_key(ctx: RotationContext, state: RotationState, reason: str) -> NoReturn:
    key_id = state.new_key_id
    if key_id and any(key.key_id == key_id for key in ctx.iam.list_keys(ctx.user_name)):
        ctx.iam.delete_key(ctx.user_name, key_id)
    ctx.records.discard_stash()
    message = f"new key {key_id} was deleted because {reason}; the old key {state.old_key_id} is unchanged"
    ctx.save(replace(state, phase=Phase.FAILED, error=message, completed_at=utcnow()))
    raise VerificationFailed(message)


@step("deactivate-old-key")
def deactivate_old_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Make the old key Inactive, but only while Vault publishes the new key (never the old one) and it is Active."""
    if state.phase.reached(Phase.DEACTIVATED):
        return state
    published = ctx.records.published()
    named = published.key_id if published else None
    if named == state.old_key_id or (not state.retirement and named != state.new_key_id):
        raise RotationConflict(
            f"Vault's secret names key {named}, not the new key {state.new_key_id}; not deactivating the old key. "
            f"Check who changed {ctx.records.paths.secret}."
        )
    keys = {key.key_id: key for key in ctx.iam.list_keys(ctx.user_name)}
    new_key = keys.get(state.new_key_id or "")
    if state.new_key_id is not None and (new_key is None or not new_key.active):
        raise PreconditionFailed(
            f"the key kept, {state.new_key_id}, is missing or inactive; not deactivating the old key"
        )
    old_key = keys.get(state.old_key_id or "")
    if old_key is not None and old_key.active:
        ctx.iam.set_status(ctx.user_name, old_key.key_id, KeyStatus.INACTIVE)
        failpoint("after-deactivate")
        get_run_logger().info("Deactivated old key %s of %r", old_key.key_id, ctx.user_name)
    now = utcnow()
    return ctx.save(
        replace(state, phase=Phase.DEACTIVATED, deactivated_at=now, delete_after=now + state.timings.grace_period)
    )


@step("delete-deactivated-key")
def delete_deactivated_key(ctx: RotationContext, state: RotationState) -> RotationState:
    """Delete the deactivated old key once its grace period is over, and complete the rotation.

    Refuses, changing nothing, if the grace period is not over or someone made the old key Active again.
    """
    if state.phase is Phase.COMPLETED:
        return state
    if state.phase is not Phase.DEACTIVATED or state.delete_after is None:
        raise PreconditionFailed(f"rotation of {ctx.user_name!r} is in phase {state.phase.value!r}, not deactivated")
    now = utcnow()
    if now < state.delete_after:
        raise PreconditionFailed(
            f"the old key {state.old_key_id} may be deleted from {state.delete_after.isoformat()}, not before"
        )
    keys = {key.key_id: key for key in ctx.iam.list_keys(ctx.user_name)}
    old_key = keys.get(state.old_key_id or "")
    if old_key is not None and old_key.active:
        raise PreconditionFailed(
            f"the old key {old_key.key_id} is Active again (reactivated by someone); not deleting it"
        )
    if old_key is not None:
        ctx.iam.delete_key(ctx.user_name, old_key.key_id)
        failpoint("after-delete")
        get_run_logger().info("Deleted old key %s of %r", old_key.key_id, ctx.user_name)
    return ctx.save(replace(state, phase=Phase.COMPLETED, completed_at=now))


def who_still_uses(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> str:
    """What CloudTrail saw use the old key since the publish, and which of those also use the new key."""
    found = None if ctx.trail is None else rotation_consumers(ctx.trail, ctx.settings.trail_regions, state, last_used)
    if found is None:
        return "CloudTrail was not read"
    return found.old.unavailable or f"In CloudTrail since the publish: {found.moving.describe()}"


@step("stop-waiting")
def stop_waiting(ctx: RotationContext, state: RotationState, last_used: LastUsed) -> NoReturn:
    """At the deadline, with the old key still in use: record the evidence, leave both keys active, stop."""
    message = (
        f"old key {state.old_key_id} was still in use at the deadline {state.wait_deadline}: "
        f"{last_used.describe()}. {who_still_uses(ctx, state, last_used)}. Both keys stay active. Find the "
        f"application still using it, then run `keyrotor rotate {ctx.user_name}` again to keep waiting (or roll back)."
    )
    ctx.save(replace(state, halted=message, last_used=last_used))
    raise StillInUse(message)
