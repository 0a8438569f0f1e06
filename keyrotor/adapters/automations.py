"""Prefect automations that keyrotor keeps on the server, created and updated idempotently by name (all named
``keyrotor: ...`` and tagged ``keyrotor``, so they are found, changed and removed as a set).

The one kept here marks flow runs that stopped sending heartbeats as Crashed (Prefect's "detect zombie flows"
recipe, which Prefect Cloud runs for itself and a self-hosted server does not): a run whose process died with its
worker's machine then stops looking Running in the UI, and the waker schedules it again.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from keyrotor.adapters.prefect_api import prefect_call

TAG = "keyrotor"
CRASH_SILENT_RUNS = "keyrotor: crash flow runs whose heartbeats stopped"
#: Flow runs beat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY (30 s is Prefect's least): three missed beats is a death.
HEARTBEAT_FREQUENCY = 30


def crash_silent_runs(within: timedelta = timedelta(seconds=HEARTBEAT_FREQUENCY * 3)) -> AutomationCore:
    """A Running flow run that sent no heartbeat (and did not end) for ``within`` is marked Crashed."""
    return AutomationCore(
        name=CRASH_SILENT_RUNS,
        description="A flow run whose process stopped sending heartbeats (its machine or worker died) is marked "
        "Crashed instead of staying Running for ever; keyrotor's waker then schedules a rotation's run again. "
        f"Needs PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_FREQUENCY} where the flows run.",
        tags=[TAG],
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.Suspended",
                "prefect.flow-run.Paused",
                "prefect.flow-run.Waiting",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                name="Crashed",
                state=StateType.CRASHED,
                force=False,
                message=f"marked Crashed by keyrotor's automation: no heartbeat for {within.total_seconds():g}s",
            )
        ],
    )


def ensure(automation: AutomationCore) -> str:
    """Create the automation, or update the one of that name to match it; returns its id. Idempotent."""
    with prefect_call(f"keep the automation {automation.name!r}"), get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            return str(client.create_automation(automation))
        current = existing[0]
        if AutomationCore.model_validate(current.model_dump()) != automation:
            client.update_automation(current.id, automation)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
        return str(current.id)


def remove(prefix: str) -> list[str]:
    """Delete keyrotor's automations whose name starts with ``prefix``; returns their names."""
    removed = []
    with prefect_call("remove keyrotor's automations"), get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if automation.name.startswith(prefix) and TAG in automation.tags:
                client.delete_automation(automation.id)
                removed.append(automation.name)
    return removed
