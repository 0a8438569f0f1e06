"""Which notice a rotation's state calls for, and the event that carries it: once per rotation and kind."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyrotor.core.model import Answer, Approval, Pause, PauseKind, Phase
from keyrotor.core.notices import Notice, notice_event, notice_for
from tests.unit.factories import T0, state


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"phase": Phase.STARTED}, None),
        ({"phase": Phase.VERIFIED}, None),
        ({"phase": Phase.PUBLISHED}, Notice.PUBLISHED),
        ({"phase": Phase.PUBLISHED, "halted": "still in use"}, Notice.STOPPED_AT_DEADLINE),
        (
            {"phase": Phase.PUBLISHED, "pause": Pause("run-1", T0, PauseKind.APPROVAL, "awaiting")},
            Notice.AWAITING_APPROVAL,
        ),
        ({"phase": Phase.PUBLISHED, "pause": Pause("run-1", T0, PauseKind.OPERATOR, "held")}, Notice.PUBLISHED),
        ({"phase": Phase.DEACTIVATED}, None),
        (
            {"phase": Phase.DEACTIVATED, "approval": Approval(Answer.APPROVE, "ok", "ann", T0)},
            Notice.APPROVED,
        ),
        ({"phase": Phase.REJECTED}, Notice.REJECTED),
        ({"phase": Phase.FAILED, "error": "never verified"}, Notice.FAILED),
        ({"phase": Phase.COMPLETED}, Notice.COMPLETED),
        ({"phase": Phase.ROLLING_BACK}, None),
        ({"phase": Phase.ROLLED_BACK}, Notice.ROLLED_BACK),
    ],
)
def test_each_state_calls_for_at_most_one_notice(changes: dict[str, object], expected: Notice | None) -> None:
    assert notice_for(state(**changes)) is expected


def test_the_event_names_everything_a_message_says_and_its_id_is_fixed_per_rotation_and_kind() -> None:
    stuck = state(phase=Phase.PUBLISHED, old_key_id="AKIAOLD", new_key_id="AKIANEW", halted="x")
    event = notice_event(
        Notice.STOPPED_AT_DEADLINE, stuck, owner="payments", command="keyrotor rotate alice", detail="10.0.3.7 cli"
    )
    assert event.event == "keyrotor.rotation.stopped-at-deadline"
    assert event.resource["prefect.resource.id"] == "keyrotor.rotation.123.alice"
    assert event.resource["keyrotor.owner"] == "payments" and event.resource["keyrotor.needs-person"] == "true"
    what = event.payload["what"]
    assert what.startswith("rotation of alice in 123: stopped at its deadline: old key AKIAOLD is still in use")
    assert what.endswith(". 10.0.3.7 cli") and event.payload["command"] == "keyrotor rotate alice"
    later = stuck.__class__(**{**stuck.__dict__, "updated_at": T0 + timedelta(days=1)})
    again = notice_event(Notice.STOPPED_AT_DEADLINE, later, owner="payments", command="")
    assert again.id == event.id, "a run restarted from the top makes the same event"
    assert notice_event(Notice.PUBLISHED, stuck, owner="", command="").id != event.id
    assert notice_event(Notice.STOPPED_AT_DEADLINE, state(rotation_id="r2"), owner="", command="").id != event.id
