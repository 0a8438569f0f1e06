"""Simulated applications for the demo and the tests: read a key from Vault, keep calling AWS with it.

Each one re-reads its secret every ``refresh`` seconds (a slow application has a long refresh) and signs
``sts:GetCallerIdentity`` every ``interval`` seconds with the key it holds, counting every refused call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from keyrotor.adapters.records import RotationRecords


@dataclass
class AppStats:
    """What an application saw: calls made, calls refused (with the reason), and when it switched keys."""

    calls: int = 0
    errors: list[str] = field(default_factory=list)
    keys_used: list[str] = field(default_factory=list)
    switched_at: dict[str, float] = field(default_factory=dict)


class SimulatedApp(threading.Thread):
    """A background thread standing in for an application that reads its AWS key from Vault."""

    def __init__(
        self,
        name: str,
        records: RotationRecords,
        *,
        refresh: float,
        interval: float = 0.2,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(name=f"app-{name}", daemon=True)
        self.app_name = name
        self._records = records
        self.refresh = refresh
        self.interval = interval
        self.stats = AppStats()
        self._stop_event = threading.Event()
        # user_agent: what CloudTrail records as the program (keyrotor consumers shows it); None: boto3's own
        self._config = Config(retries={"mode": "standard", "max_attempts": 1}, user_agent=user_agent)

    def _load(self) -> tuple[str, object] | None:
        credentials = self._records.published_credentials()
        if credentials is None:
            return None
        client = boto3.client(
            "sts",
            aws_access_key_id=credentials.key_id,
            aws_secret_access_key=credentials.secret.get_secret_value(),
            config=self._config,
        )
        return credentials.key_id, client

    def run(self) -> None:
        loaded, loaded_at = self._load(), time.monotonic()
        while not self._stop_event.is_set():
            if time.monotonic() - loaded_at >= self.refresh:
                loaded, loaded_at = self._load(), time.monotonic()
            if loaded is not None:
                self._call(*loaded)
            self._stop_event.wait(self.interval)

    def _call(self, key_id: str, client: object) -> None:
        if not self.stats.keys_used or self.stats.keys_used[-1] != key_id:
            self.stats.keys_used.append(key_id)
            self.stats.switched_at[key_id] = time.time()
        self.stats.calls += 1
        try:
            client.get_caller_identity()  # type: ignore[attr-defined]
        except (ClientError, BotoCoreError) as error:
            self.stats.errors.append(f"{key_id}: {error}")

    def stop(self) -> AppStats:
        self._stop_event.set()
        self.join(timeout=10)
        return self.stats
