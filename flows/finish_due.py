"""``finish-due-deletions``: a safety net that deletes every old key whose grace period is over.

Each rotation schedules its own ``delete-old-key`` run; this sweep (hourly when served) also finds, from the
durable state in Vault alone, any deletion that is due but was never run: its scheduled run was lost with the
Prefect database, or the rotation ran where no deployment existed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from keyrotor.core.errors import KeyrotorError
from keyrotor.flows.delete_old_key import delete_old_key_after_grace
from keyrotor.settings import Settings
from keyrotor.tasks.sweep import due_deletions


@flow(name="finish-due-deletions", persist_result=False)
def finish_due_deletions() -> dict[str, Any]:
    """Run ``delete-old-key`` for every rotation whose old key is due for deletion; one failure stops no other."""
    logger = get_run_logger()
    done: list[str] = []
    failed: dict[str, str] = {}
    for account_id, user_name in due_deletions(Settings()):
        who = f"{account_id}/{user_name}"
        try:
            delete_old_key_after_grace(user_name=user_name, account_id=account_id)
            done.append(who)
        except KeyrotorError as error:
            failed[who] = str(error)
            logger.warning("Could not finish %s: %s", who, error)
    logger.info("Finished %d due deletion(s); %d failed", len(done), len(failed))
    return {"finished": done, "failed": failed}
