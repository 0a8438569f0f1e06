"""The one Prefect internal keyrotor touches: a flow called through ``detached_from_flow_run`` from inside a flow
run is a flow run of its own on the same server, not a subflow (in-process remediation relies on it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prefect import flow
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL

from keyrotor.adapters.prefect_api import detached_from_flow_run

pytestmark = pytest.mark.integration


@flow(persist_result=False)
def child() -> tuple[str, str]:
    """This run's parent task run ("None" for a top-level run) and the API it talks to."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    return str(context.flow_run.parent_task_run_id), str(PREFECT_API_URL.value())


@flow(persist_result=False)
def parent() -> tuple[tuple[str, str], tuple[str, str], bool]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        detached = pool.submit(detached_from_flow_run(child)).result()
    inline = child()
    return detached, inline, FlowRunContext.get() is not None


def test_a_flow_called_detached_is_a_run_of_its_own_on_the_same_server(prefect_api: str) -> None:
    (detached_parent, detached_api), (inline_parent, inline_api), still_in_run = parent()
    assert detached_parent == "None"  # its own run
    assert inline_parent != "None"  # the same flow called plainly is a subflow: the check can tell them apart
    assert detached_api == inline_api == prefect_api  # the caller's settings came along
    assert still_in_run  # the caller's own run context is untouched


def test_an_automation_is_kept_by_name_once_and_removed_as_keyrotor_s(prefect_api: str) -> None:
    """The automation that crashes silent runs (made by every waker at start): made once however often it is asked
    for, brought back to its definition when someone changed it, and removed with keyrotor's others."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import EventTrigger

    from keyrotor.adapters.automations import CRASH_SILENT_RUNS, crash_silent_runs, ensure, remove

    first = ensure(crash_silent_runs())
    assert ensure(crash_silent_runs()) == first
    ensure(crash_silent_runs(within=timedelta(seconds=300)))
    with get_client(sync_client=True) as client:
        (kept,) = client.read_automations_by_name(CRASH_SILENT_RUNS)
    trigger = kept.trigger
    assert isinstance(trigger, EventTrigger) and str(kept.id) == first and trigger.within == timedelta(seconds=300)
    assert "prefect.flow-run.Waiting" in trigger.expect, "a parked run sends no heartbeat and is not dead"
    assert remove("keyrotor: crash") == [CRASH_SILENT_RUNS]
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(CRASH_SILENT_RUNS) == []
    ensure(crash_silent_runs())  # as the session's wakers keep it
