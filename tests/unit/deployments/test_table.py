"""One table of deployments drives `keyrotor serve`, prefect.yaml and every lookup by name."""

from __future__ import annotations

from keyrotor.deployments.prefect_yaml import render
from keyrotor.deployments.serve import build_deployments
from keyrotor.deployments.table import ALL, DELETE, REMEDIATE
from keyrotor.settings import Settings
from tests.conftest import ROOT


def test_prefect_yaml_is_generated_from_the_table() -> None:
    assert (ROOT / "prefect.yaml").read_text() == render(), (
        "prefect.yaml is stale: python -m keyrotor.deployments.prefect_yaml > prefect.yaml"
    )


def test_serve_offers_every_deployment_of_the_table_with_its_flow_and_schedule() -> None:
    served = {deployment.name: deployment for deployment in build_deployments()}
    assert list(served) == [deployment.name for deployment in ALL]
    for row in ALL:
        assert served[row.name].flow_name == row.flow().name == row.name
        assert served[row.name].description == row.description
        schedules = served[row.name].schedules or []
        assert bool(schedules) == bool(row.cron or row.interval)
        assert all(schedule.active is row.active for schedule in schedules)


def test_the_daily_remediation_of_the_whole_account_is_off_until_an_operator_turns_it_on() -> None:
    (schedule,) = next(d for d in build_deployments() if d.name == REMEDIATE.name).schedules or []
    assert schedule.active is False and "active: false" in render()


def test_the_deletion_deployment_setting_names_the_table_entry() -> None:
    assert Settings(vault_token=None).delete_deployment == DELETE.full_name
