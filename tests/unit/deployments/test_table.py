"""One table of deployments drives `keyrotor serve`, prefect.yaml and every lookup by name."""

from __future__ import annotations

from keyrotor.deployments.prefect_yaml import render
from keyrotor.deployments.serve import build_deployments
from keyrotor.deployments.table import ALL, DELETE
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
        assert bool(served[row.name].schedules) == bool(row.scheduled_when_served and (row.cron or row.interval))


def test_the_deletion_deployment_setting_names_the_table_entry() -> None:
    assert Settings(vault_token=None).delete_deployment == DELETE.full_name
