"""CloudTrail's ``LookupEvents`` for one access key: who used it, read within AWS's rate limit.

AWS allows about 2 ``LookupEvents`` requests per second per account and region; every reader in a process shares
one limiter per (account, region), so a fleet's status or a waker never gets throttled into failing. Each call has
one lookup attribute (``AccessKeyId``) and one region; pages hold at most 50 events. Throttling that still happens
is retried by botocore's standard mode. Without permission for ``cloudtrail:LookupEvents`` the reader says so
(``KeyConsumers.unavailable``) instead of failing: the last-used date is what decides a rotation, consumers only
help a person find who to move.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from keyrotor.adapters.iam import translate
from keyrotor.core.consumers import KeyConsumers, consumers_of

#: Requests per second per account and region that AWS allows LookupEvents.
RATE = 2.0
#: Events read per key and region, newest first (a busy key has thousands a day; 10 pages name its consumers).
MOST_EVENTS = 500
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException"}


class RateLimiter:
    """At most ``rate`` acquisitions a second per key, shared by every thread of the process."""

    def __init__(self, rate: float = RATE) -> None:
        self._interval = 1 / rate
        self._next: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: tuple[str, str]) -> None:
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next.get(key, now))
            self._next[key] = at + self._interval
        if at > now:
            time.sleep(at - now)


LIMITER = RateLimiter()


class TrailGateway(Protocol):
    """Who used a key, as CloudTrail saw it."""

    def consumers(
        self, key_id: str, regions: Iterable[str], since: datetime, most: int = MOST_EVENTS
    ) -> KeyConsumers: ...


class Boto3Trail:
    """:class:`TrailGateway` over boto3's ``cloudtrail`` client, one client per region."""

    def __init__(
        self, session: boto3.Session, account_id: str, max_attempts: int = 10, clients: dict[str, Any] | None = None
    ) -> None:
        self._session = session
        self._account_id = account_id
        self._config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
        self._clients: dict[str, Any] = dict(clients or {})  # by region; given ones are used as they are
        self._lock = threading.Lock()

    def _client(self, region: str) -> Any:
        with self._lock:
            if region not in self._clients:
                self._clients[region] = self._session.client("cloudtrail", region_name=region, config=self._config)
            return self._clients[region]

    def events(self, key_id: str, region: str, since: datetime) -> Iterator[dict[str, Any]]:
        """Every management event made with ``key_id`` in ``region`` since ``since``, newest first."""
        client = self._client(region)
        query: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": key_id}],
            "StartTime": since,
            "MaxResults": 50,
        }
        while True:
            LIMITER.acquire((self._account_id, region))
            page = client.lookup_events(**query)
            yield from page.get("Events", [])
            if not page.get("NextToken"):
                return
            query["NextToken"] = page["NextToken"]

    def consumers(self, key_id: str, regions: Iterable[str], since: datetime, most: int = MOST_EVENTS) -> KeyConsumers:
        """The key's consumers from at most ``most`` of its newest events in each region."""
        looked = tuple(dict.fromkeys(r for r in regions if r))
        events: list[dict[str, Any]] = []
        truncated = False
        try:
            for region in looked:
                found = list(islice(self.events(key_id, region, since), most + 1))
                truncated |= len(found) > most
                events.extend(found[:most])
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _DENIED:
                why = (
                    "CloudTrail cannot be read (cloudtrail:LookupEvents is not allowed: add statement "
                    "WhoUsesAKey of policies/iam-policy.json)"
                )
                return KeyConsumers(key_id, since, looked, unavailable=why)
            return KeyConsumers(key_id, since, looked, unavailable=str(translate(error, "CloudTrail LookupEvents")))
        except BotoCoreError as error:
            return KeyConsumers(key_id, since, looked, unavailable=str(translate(error, "CloudTrail LookupEvents")))
        return KeyConsumers(key_id, since, looked, consumers_of(events), truncated=truncated)
