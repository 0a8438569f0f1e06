"""Notices from a rotation's saved states, against in-memory IAM and Vault: each kind sent once per rotation,
the owner from the user's tag, and a notice that cannot be sent never stops the rotation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from prefect.logging import disable_run_logger

from keyrotor.adapters.notifications import Wanted
from keyrotor.core.errors import PrefectUnavailable
from keyrotor.core.model import Phase
from keyrotor.core.notices import Notice, NoticeEvent
from keyrotor.tasks import notify as notify_module
from keyrotor.tasks.notify import notify
from tests.unit.fakes import FakeIam, FakeKV
from tests.unit.tasks.test_steps import context, started


@pytest.fixture(autouse=True)
def _no_run_logger() -> Iterator[None]:
    with disable_run_logger():
        yield


EVERY = Wanted(frozenset(notice.value for notice in Notice), "owner")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[NoticeEvent]:
    events: list[NoticeEvent] = []
    monkeypatch.setattr(notify_module, "emit", events.append)
    monkeypatch.setattr(notify_module, "wanted", lambda: EVERY)
    return events


def test_a_notice_is_sent_once_however_often_its_state_is_saved(sent: list[NoticeEvent]) -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    iam.tags["alice"] = {"owner": "payments"}
    ctx = context(iam, kv)
    state = started(ctx, old)
    assert notify(ctx, state) is state and sent == [], "started calls for no notice"
    halted = ctx.save(replace(state, phase=Phase.PUBLISHED, halted="old key still in use; 127.0.0.1 legacy/1.0"))
    first = notify(ctx, halted)
    assert [e.event for e in sent] == ["keyrotor.rotation.stopped-at-deadline"]
    assert sent[0].payload["owner"] == "payments" and "legacy/1.0" in sent[0].payload["what"]
    assert first.notified == ("stopped-at-deadline",) and first.version > halted.version
    again = ctx.save(replace(first, halted="old key still in use (second run)"))  # a run restarted from the top
    assert notify(ctx, again) is again and len(sent) == 1
    done = notify(ctx, ctx.save(replace(again, phase=Phase.COMPLETED, halted=None)))
    assert [e.event for e in sent][1:] == ["keyrotor.rotation.completed"]
    assert done.notified == ("stopped-at-deadline", "completed")


def test_a_notice_that_cannot_be_sent_never_stops_the_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(event: NoticeEvent) -> None:
        raise PrefectUnavailable("the Prefect server did not answer")

    monkeypatch.setattr(notify_module, "emit", down)
    monkeypatch.setattr(notify_module, "wanted", lambda: EVERY)
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    published = ctx.save(replace(started(ctx, old), phase=Phase.PUBLISHED))
    assert notify(ctx, published) is published  # not recorded as sent: the next save tries again


def test_without_notifications_applied_nothing_is_sent_and_nothing_is_called(
    monkeypatch: pytest.MonkeyPatch, sent: list[NoticeEvent]
) -> None:
    iam, kv = FakeIam(), FakeKV()
    (old,) = iam.add_user("alice")
    ctx = context(iam, kv)
    published = ctx.save(replace(started(ctx, old), phase=Phase.PUBLISHED))
    monkeypatch.setattr(notify_module, "wanted", lambda: None)
    assert notify(ctx, published) is published and sent == []
    only_stuck = Wanted(frozenset({"stopped-at-deadline"}), "team")
    monkeypatch.setattr(notify_module, "wanted", lambda: only_stuck)
    assert notify(ctx, published) is published and sent == [], "published was not asked for"
    iam.tags["alice"] = {"team": "payments"}
    stuck = notify(ctx, ctx.save(replace(published, halted="still in use")))
    assert [e.payload["owner"] for e in sent] == ["payments"] and stuck.notified == ("stopped-at-deadline",)
