"""Telling a rotation's owner, through Prefect's own machinery: keyrotor emits events (:mod:`keyrotor.core.notices`);
a notification block and automations kept on the Prefect server turn them into messages.

Everything here works on a self-hosted open-source Prefect server: ``SendNotification`` actions with the
``SlackWebhook``, ``MicrosoftTeamsWebhook`` or ``CustomWebhookNotificationBlock`` (any JSON POST) blocks, all in
Prefect itself, so the server can load them. ``apply`` is idempotent (the block is saved over, the automations are
kept by name through :func:`keyrotor.adapters.automations.ensure`); ``remove`` takes them away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from uuid import UUID

from prefect.blocks.notifications import CustomWebhookNotificationBlock, MicrosoftTeamsWebhook, SlackWebhook
from prefect.events import emit_event
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from pydantic import SecretStr

from keyrotor.adapters.automations import TAG, ensure, remove
from keyrotor.adapters.prefect_api import prefect_call
from keyrotor.core.durations import format_duration
from keyrotor.core.notices import NEEDS_PERSON, Notice, NoticeEvent

BLOCK = "keyrotor-notifications"
#: The Prefect variable ``notifications apply`` sets: which notices are wanted, and the IAM user tag naming the
#: owner. Without it, rotations send no events at all (and pay none of their calls).
WANTED_VARIABLE = "keyrotor_notifications"
PREFIX = "keyrotor notify: "
ROTATIONS = ResourceSpecification({"prefect.resource.id": ["keyrotor.rotation.*"]})
SUBJECT = "keyrotor: {{ event.payload.what | truncate(120) }}"
BODY = (
    "{{ event.payload.what }}\n"
    "user: {{ event.payload.user }}, account: {{ event.payload.account_id }}, owner: {{ event.payload.owner }}\n"
    "old key: {{ event.payload.old_key_id }}, new key: {{ event.payload.new_key_id }}\n"
    "{% if event.payload.command %}next: {{ event.payload.command }}{% endif %}"
)
#: What ends a wait for approval (the reminder is not sent once one of these arrived).
ANSWERED = {Notice.APPROVED, Notice.REJECTED, Notice.ROLLED_BACK, Notice.FAILED, Notice.COMPLETED}


@dataclass(frozen=True)
class Wanted:
    """What ``notifications apply`` asked for on this server: the notices to send, and the owner's tag."""

    notices: frozenset[str]
    owner_tag: str


def wanted() -> Wanted | None:
    """The notices wanted on this Prefect server (None: none); read at most once a minute per process, so a fleet
    does not ask for every rotation, and a server without notifications costs a rotation nothing."""
    from prefect.settings import PREFECT_API_URL
    from prefect.variables import Variable

    server = str(PREFECT_API_URL.value() or "")
    if not server:
        return None  # Prefect's temporary server: nobody could receive a message
    cached = _WANTED.get(server)
    if cached is None or time.monotonic() - cached[0] > 60:
        with prefect_call("read which notices are wanted"):
            value = Variable.get(WANTED_VARIABLE, default=None)
        found = None
        if isinstance(value, dict) and isinstance(value.get("notices"), list):
            found = Wanted(frozenset(map(str, value["notices"])), str(value.get("owner_tag") or "owner"))
        cached = _WANTED[server] = (time.monotonic(), found)
    return cached[1]


_WANTED: dict[str, tuple[float, Wanted | None]] = {}


def emit(notice: NoticeEvent) -> None:
    """Send the notice's event (Prefect's events worker delivers it in the background; nothing without a server)."""
    emit_event(event=notice.event, resource=notice.resource, payload=notice.payload, id=notice.id)


@dataclass(frozen=True)
class Channel:
    """Where messages go."""

    kind: Literal["slack", "teams", "webhook"]
    url: str
    allow_private: bool = False  # a webhook on a private or loopback address (refused by Prefect by default)

    def block(self) -> SlackWebhook | MicrosoftTeamsWebhook | CustomWebhookNotificationBlock:
        if self.kind == "slack":
            return SlackWebhook(url=SecretStr(self.url), allow_private_urls=self.allow_private)
        if self.kind == "teams":
            return MicrosoftTeamsWebhook(url=SecretStr(self.url), allow_private_urls=self.allow_private)
        return CustomWebhookNotificationBlock(
            name="keyrotor",
            url=self.url,
            method="POST",
            json_data={"subject": "{{subject}}", "text": "{{body}}"},
            headers=None,
            cookies=None,
            allow_private_urls=self.allow_private,
        )


def automations(block_id: UUID, also: frozenset[Notice], remind_after: timedelta | None) -> list[AutomationCore]:
    """The automations that send messages: every notice that needs a person, the ``also`` ones, and one reminder
    of an approval left waiting ``remind_after``."""

    def send(
        name: str, events: set[str], description: str, subject: str = SUBJECT, **trigger: object
    ) -> AutomationCore:
        return AutomationCore(
            name=f"{PREFIX}{name}",
            description=description,
            tags=[TAG],
            trigger=EventTrigger(expect=events, match=ROTATIONS, **trigger),  # type: ignore[arg-type]
            actions=[SendNotification(block_document_id=block_id, subject=subject, body=BODY)],
        )

    kept = [
        send(
            "a rotation needs a person",
            {notice.event for notice in NEEDS_PERSON},
            "A message when a rotation stops at its deadline, awaits approval, is rejected or fails.",
            posture=Posture.Reactive,
            threshold=1,
        )
    ]
    if also:
        kept.append(
            send(
                "what else happened to a rotation",
                {notice.event for notice in also},
                f"A message when a rotation is {', '.join(sorted(n.value for n in also))}.",
                posture=Posture.Reactive,
                threshold=1,
            )
        )
    if remind_after is not None:
        kept.append(
            send(
                "an approval is still waiting",
                {notice.event for notice in ANSWERED},
                f"One reminder when an approval has waited {format_duration(remind_after)} without an answer.",
                subject=f"keyrotor reminder, no answer for {format_duration(remind_after)}: "
                "{{ event.payload.what | truncate(100) }}",
                after={Notice.AWAITING_APPROVAL.event},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=remind_after,
            )
        )
    return kept


def apply(channel: Channel, also: frozenset[Notice], remind_after: timedelta | None, tag: str) -> list[str]:
    """Save the block and the owner tag, and keep the automations (creating, updating or deleting by name);
    returns their names."""
    from prefect.variables import Variable

    with prefect_call("save the notification block and the owner tag"):
        sent = {n.value for n in (*NEEDS_PERSON, *also, *(ANSWERED if remind_after is not None else ()))}
        Variable.set(WANTED_VARIABLE, {"notices": sorted(sent), "owner_tag": tag}, overwrite=True)
        _WANTED.clear()
        block_id = channel.block().save(BLOCK, overwrite=True)  # sync here: the id, not a coroutine
    assert isinstance(block_id, UUID)
    wanted = automations(block_id, also, remind_after)
    names = {automation.name for automation in wanted}
    for automation in wanted:
        ensure(automation)
    return [*sorted(names), *(f"(removed) {name}" for name in remove_except(names))]


def remove_except(keep: set[str]) -> list[str]:
    """Delete keyrotor's notification automations not in ``keep``."""
    from prefect.client.orchestration import get_client

    removed = []
    with prefect_call("remove keyrotor's notification automations"), get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if automation.name.startswith(PREFIX) and TAG in automation.tags and automation.name not in keep:
                client.delete_automation(automation.id)
                removed.append(automation.name)
    return removed


def remove_all() -> list[str]:
    """Take away the automations and the block."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.variables import Variable

    removed = remove(PREFIX)
    with prefect_call("remove the notification block"), get_client(sync_client=True) as client:
        if Variable.unset(WANTED_VARIABLE):
            removed.append(f"variable {WANTED_VARIABLE}")
        _WANTED.clear()
        for slug in ("custom-webhook", "slack-webhook", "ms-teams-webhook"):
            try:
                document = client.read_block_document_by_name(BLOCK, slug)
            except ObjectNotFound:
                continue
            client.delete_block_document(document.id)
            removed.append(f"block {slug}/{BLOCK}")
    return removed
