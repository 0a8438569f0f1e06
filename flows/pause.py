"""``pause-rotation``: pause a user's rotation from the Prefect UI, in any phase (the UI's own Pause is offered only
while a run is Running, and expires; a rotation that waits for its old key to go quiet is Suspended, not Running)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_runs import PrefectRuns
from keyrotor.control.pause import pause_rotation
from keyrotor.core.errors import KeyrotorError
from keyrotor.core.inputs import UserRequest
from keyrotor.flows import refused, run_name
from keyrotor.tasks.report import tag_run


@flow(name="pause-rotation", flow_run_name=run_name("pause"), persist_result=False)
def pause_rotation_flow(request: UserRequest) -> str | State:
    """Pause the user's rotation until someone resumes it (the UI's Resume on its run, or ``keyrotor resume USER``);
    returns the id of the paused flow run."""
    try:
        connections = Connections.from_settings().for_account(request.account, f"pause-{request.user_name}")
        tag_run(request.user_name, connections.account_id)
        run_id = pause_rotation(connections, PrefectRuns(), request.user_name)
    except KeyrotorError as error:
        return refused(error)
    get_run_logger().info("Paused the rotation of %r (flow run %s): resume it on that run", request.user_name, run_id)
    return run_id
