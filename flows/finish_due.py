"""``finish-due-deletions``: a safety net that deletes every key whose grace period is over.

Each rotation (and rollback) schedules its own ``delete-old-key`` run; this sweep (hourly when served) also finds,
from the durable state in Vault alone, any deletion that is due but was never run: its scheduled run was lost with
the Prefect database, or the rotation ran where no deployment existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger

from keyrotor.adapters.prefect_api import run_here
from keyrotor.core.inputs import UserRequest
from keyrotor.flows.delete_old_key import delete_old_key_after_grace
from keyrotor.settings import Settings
from keyrotor.tasks.sweep import due_deletions


@dataclass(frozen=True)
class SweepOutcome:
    """What the sweep finished and what failed (``account/user`` -> why)."""

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@flow(name="finish-due-deletions", persist_result=False)
def finish_due_deletions() -> SweepOutcome:
    """Run ``delete-old-key`` for every rotation whose key is due for deletion; one failure stops no other."""
    logger = get_run_logger()
    done = SweepOutcome()
    for account_id, user_name in due_deletions(Settings()):
        who = f"{account_id}/{user_name}"
        request = UserRequest(user_name=user_name, account_id=account_id)
        try:
            run_here(delete_old_key_after_grace, request)
            done.finished.append(who)
        except Exception as error:  # noqa: BLE001 - one user's failure, whatever it is, stops no other
            done.failed[who] = str(error)
            logger.warning("Could not finish %s: %s", who, error)
    logger.info("Finished %d due deletion(s); %d failed", len(done.finished), len(done.failed))
    return done
