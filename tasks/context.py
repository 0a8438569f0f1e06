"""What every rotation step is handed: the user, the gateways, the settings and who is acting."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from keyrotor.adapters.cloudtrail import TrailGateway
from keyrotor.adapters.iam import IamGateway
from keyrotor.adapters.records import RotationRecords, WaitingIndex
from keyrotor.core.model import RotationState
from keyrotor.failpoints import failpoint
from keyrotor.settings import Settings


class LeaseGuard(Protocol):
    """Anything that can tell whether this run still owns the rotation."""

    def assert_held(self) -> None: ...


@dataclass(frozen=True)
class RotationContext:
    """One user's rotation as seen by one run. Steps save state only through :meth:`save`."""

    user_name: str
    account_id: str
    iam: IamGateway
    records: RotationRecords
    waiting: WaitingIndex
    settings: Settings
    actor: str
    flow_run_id: str | None = None
    lease: LeaseGuard | None = None
    trail: TrailGateway | None = None  # who used a key (CloudTrail), for what a stuck rotation tells a person
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)  # every wait and retry sleeps here
    # After every save: publish the view, send a notice; it may save again, and returns the state as now saved.
    on_saved: Callable[[RotationContext, RotationState], RotationState] | None = field(default=None, repr=False)

    def save(self, state: RotationState) -> RotationState:
        """Persist ``state`` (check-and-set), after making sure this run still holds the lease."""
        if self.lease is not None:
            self.lease.assert_held()
        saved = self.records.save_state(replace(state, last_flow_run_id=self.flow_run_id), self.actor)
        failpoint(f"saved-{saved.phase.value}", self.user_name)
        if self.on_saved is not None:
            saved = self.on_saved(self, saved)
        return saved

    def holding(self, lease: LeaseGuard | None) -> RotationContext:
        return dataclasses.replace(self, lease=lease)
