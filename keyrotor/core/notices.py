"""What a person may want to be told about a rotation, as Prefect events. Pure.

Every saved rotation state maps to at most one notice (:func:`notice_for`): the new key published; a person is
needed (stopped at the deadline, awaiting approval, rejected, failed); completed; rolled back. A notice is sent
once per rotation: the kinds already sent are kept in the rotation's record (``notified``), and the event's id is
derived from the rotation and the kind, so a run that restarts from the top, or a send retried after a crash,
makes the same event, which Prefect does not act on twice.

The event (``keyrotor.rotation.<kind>``) has one resource per rotation, labelled with the user, the account and
the owner (from an IAM user tag, ``owner`` by default), and a payload with everything a message says: the user,
the account, the key ids, what happened, who still uses the old key, and the one command that moves it on.
``keyrotor notifications apply`` turns the events into messages (see :mod:`keyrotor.adapters.notifications`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from keyrotor.core.model import PauseKind, Phase, RotationState

EVENT_PREFIX = "keyrotor.rotation."
_NAMESPACE = uuid.UUID("8a0d5c2e-4b1f-4e5a-9a53-3f1d2b7c6e10")


class Notice(StrEnum):
    """What happened to a rotation, as a person would be told."""

    PUBLISHED = "published"
    STOPPED_AT_DEADLINE = "stopped-at-deadline"
    AWAITING_APPROVAL = "awaiting-approval"
    APPROVED = "approved"  # ends a wait for approval (no message by default)
    REJECTED = "rejected"
    FAILED = "failed"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled-back"

    @property
    def event(self) -> str:
        return f"{EVENT_PREFIX}{self.value}"

    @property
    def needs_person(self) -> bool:
        return self in NEEDS_PERSON


NEEDS_PERSON = frozenset({Notice.STOPPED_AT_DEADLINE, Notice.AWAITING_APPROVAL, Notice.REJECTED, Notice.FAILED})

_HEADLINES = {
    Notice.PUBLISHED: "new key {new} published to Vault; waiting for applications to move off {old}",
    Notice.STOPPED_AT_DEADLINE: "stopped at its deadline: old key {old} is still in use, both keys stay active",
    Notice.AWAITING_APPROVAL: "awaits approval to deactivate old key {old}",
    Notice.APPROVED: "approved: old key {old} deactivated",
    Notice.REJECTED: "rejected: both keys {old} and {new} stay active",
    Notice.FAILED: "failed; the old key {old} is untouched",
    Notice.COMPLETED: "completed: old key {old} deleted, {new} in use",
    Notice.ROLLED_BACK: "rolled back to old key {old}; new key {new} deactivated",
}


def notice_for(state: RotationState) -> Notice | None:
    """The notice this state calls for, if any (a retirement's is the same, with its key as the old one)."""
    if state.halted:
        return Notice.STOPPED_AT_DEADLINE
    if state.pause is not None and state.pause.kind is PauseKind.APPROVAL:
        return Notice.AWAITING_APPROVAL
    if state.phase is Phase.DEACTIVATED and state.approval is not None:
        return Notice.APPROVED
    return {
        Phase.PUBLISHED: Notice.PUBLISHED,
        Phase.REJECTED: Notice.REJECTED,
        Phase.FAILED: Notice.FAILED,
        Phase.COMPLETED: Notice.COMPLETED,
        Phase.ROLLED_BACK: Notice.ROLLED_BACK,
    }.get(state.phase)


@dataclass(frozen=True)
class NoticeEvent:
    """One notice as the Prefect event that carries it."""

    id: uuid.UUID
    event: str
    resource: dict[str, str]
    payload: dict[str, Any]


def notice_event(notice: Notice, state: RotationState, *, owner: str, command: str, detail: str = "") -> NoticeEvent:
    """The event for ``notice`` about ``state``; ``detail`` adds what the headline cannot say (the consumers)."""
    old, new = state.old_key_id or "-", state.new_key_id or "-"
    headline = _HEADLINES[notice].format(old=old, new=new)
    said = f"{state.kind.value} of {state.user_name} in {state.account_id}: {headline}"
    if notice is Notice.FAILED and state.error:
        said += f" ({state.error})"
    if detail:
        said += f". {detail}"
    return NoticeEvent(
        id=uuid.uuid5(_NAMESPACE, f"{state.rotation_id}/{notice.value}"),
        event=notice.event,
        resource={
            "prefect.resource.id": f"keyrotor.rotation.{state.account_id}.{state.user_name}",
            "prefect.resource.name": f"{state.user_name} in {state.account_id}",
            "keyrotor.user": state.user_name,
            "keyrotor.account": state.account_id,
            "keyrotor.owner": owner,
            "keyrotor.rotation-id": state.rotation_id,
            "keyrotor.notice": notice.value,
            "keyrotor.needs-person": str(notice.needs_person).lower(),
        },
        payload={
            "user": state.user_name,
            "account_id": state.account_id,
            "owner": owner,
            "old_key_id": state.old_key_id,
            "new_key_id": state.new_key_id,
            "phase": state.phase.value,
            "what": said,
            "command": command,
            "needs_person": notice.needs_person,
        },
    )
