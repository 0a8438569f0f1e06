"""Who uses an access key, from CloudTrail's events: one consumer per source address and user agent.

Pure: the events come in as ``LookupEvents`` returns them (each with its ``CloudTrailEvent`` JSON), and out come
the consumers (where from, which program, which calls, first and last seen, how many), and, for a rotation, which
consumers of the old key have been seen on the new key and which are still only on the old one.

What this cannot see is said with it: ``LookupEvents`` has management events only (an application that only reads
S3 objects, a data event, is not in it), of the last 90 days, and shows an event minutes after the call. The
last-used date stays what decides; consumers only say *who* to go and find.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyrotor.core.timestamps import as_utc

BLIND_SPOTS = (
    "CloudTrail's LookupEvents shows management events only (no S3 object reads or other data events), of the "
    "last 90 days, minutes after they happen; the last-used date still decides"
)


@dataclass(frozen=True)
class Consumer:
    """One program on one host using a key: its source address and user agent, and what it called."""

    source_ip: str
    user_agent: str
    calls: tuple[str, ...]
    regions: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    count: int

    @property
    def identity(self) -> tuple[str, str]:
        return self.source_ip, self.user_agent

    @property
    def program(self) -> str:
        """The user agent's first word (``aws-cli/2.15.0``, ``Boto3/1.35.0``), what a person recognises."""
        return self.user_agent.split(" ", 1)[0] or "?"

    def describe(self) -> str:
        """``10.0.3.7 aws-cli/2.15.0 (sts:GetCallerIdentity, 40 calls, last seen 2026-...)``"""
        calls = ", ".join(self.calls[:3]) + (", ..." if len(self.calls) > 3 else "")
        return (
            f"{self.source_ip or '?'} {self.program} ({calls}; {self.count} call{'s' * (self.count != 1)}, "
            f"last seen {self.last_seen.isoformat(timespec='seconds')})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "calls": list(self.calls),
            "regions": list(self.regions),
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "count": self.count,
        }


@dataclass(frozen=True)
class KeyConsumers:
    """The consumers of one key seen in CloudTrail, where and since when it was looked at, and what was not seen."""

    key_id: str
    since: datetime
    regions: tuple[str, ...]
    consumers: tuple[Consumer, ...] = ()
    unavailable: str | None = None  # why CloudTrail could not be read (no permission...), when it could not
    truncated: bool = False  # only the newest events were read (a busy key): older consumers may be missing

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "since": self.since.isoformat(),
            "regions": list(self.regions),
            "consumers": [consumer.to_json() for consumer in self.consumers],
            "unavailable": self.unavailable,
            "truncated": self.truncated,
            "blind_spots": BLIND_SPOTS,
        }


@dataclass
class _Tally:
    calls: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    times: list[datetime] = field(default_factory=list)


def consumers_of(events: Iterable[Mapping[str, Any]]) -> tuple[Consumer, ...]:
    """Group ``LookupEvents`` events by source address and user agent, most recently seen first. Events whose
    ``CloudTrailEvent`` is missing or not JSON are skipped (they name no consumer)."""
    tallies: dict[tuple[str, str], _Tally] = {}
    for event in events:
        try:
            detail = json.loads(event["CloudTrailEvent"])
        except (KeyError, TypeError, ValueError):
            continue
        when = _event_time(event, detail)
        if when is None:
            continue
        identity = (str(detail.get("sourceIPAddress") or ""), str(detail.get("userAgent") or ""))
        tally = tallies.setdefault(identity, _Tally())
        source = str(detail.get("eventSource") or event.get("EventSource") or "?").removesuffix(".amazonaws.com")
        tally.calls.add(f"{source}:{detail.get('eventName') or event.get('EventName') or '?'}")
        if detail.get("awsRegion"):
            tally.regions.add(str(detail["awsRegion"]))
        tally.times.append(when)
    consumers = [
        Consumer(
            source_ip=ip,
            user_agent=agent,
            calls=tuple(sorted(tally.calls)),
            regions=tuple(sorted(tally.regions)),
            first_seen=min(tally.times),
            last_seen=max(tally.times),
            count=len(tally.times),
        )
        for (ip, agent), tally in tallies.items()
    ]
    return tuple(sorted(consumers, key=lambda c: c.last_seen, reverse=True))


def _event_time(event: Mapping[str, Any], detail: Mapping[str, Any]) -> datetime | None:
    value = event.get("EventTime")
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(datetime.fromisoformat(str(detail["eventTime"]).replace("Z", "+00:00")))
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class Moving:
    """The old key's consumers, by where they stand: seen on the new key (moved), still calling with the old key
    only after the publish, or no longer calling at all (stopped)."""

    moved: tuple[Consumer, ...]
    still_on_old: tuple[Consumer, ...]
    stopped: tuple[Consumer, ...] = ()

    def describe(self) -> str:
        """``1 of 2 moved to the new key; still on the old key only: 10.0.3.7 aws-cli/2.15.0 (...)``"""
        total = len(self.moved) + len(self.still_on_old)
        if not total:
            return "no call with the old key seen (management events only, shown minutes late)"
        said = f"{len(self.moved)} of {total} moved to the new key"
        if self.still_on_old:
            said += "; still on the old key only: " + "; ".join(c.describe() for c in self.still_on_old)
        if self.stopped:
            said += f"; {len(self.stopped)} stopped calling before the publish"
        return said

    def to_json(self) -> dict[str, Any]:
        return {
            "moved": [consumer.to_json() for consumer in self.moved],
            "still_on_old": [consumer.to_json() for consumer in self.still_on_old],
            "stopped": [consumer.to_json() for consumer in self.stopped],
        }


def moving(old: KeyConsumers, new: KeyConsumers | None, published_at: datetime) -> Moving:
    """A consumer of the old key has moved when the same source address and user agent have used the new key; it
    still uses the old key only when it called with it after ``published_at`` and never with the new one."""
    on_new = {consumer.identity for consumer in (new.consumers if new else ())}
    rest = [c for c in old.consumers if c.identity not in on_new]
    return Moving(
        moved=tuple(c for c in old.consumers if c.identity in on_new),
        still_on_old=tuple(c for c in rest if c.last_seen >= published_at),
        stopped=tuple(c for c in rest if c.last_seen < published_at),
    )
