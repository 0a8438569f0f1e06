"""CloudTrail's LookupEvents as AWS documents its answer (botocore's Stubber checks every request and response
against the service model): paging, the shared rate limit, and a reader without permission."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.stub import Stubber

from keyrotor.adapters.cloudtrail import Boto3Trail, RateLimiter
from keyrotor.core.consumers import moving

KEY, NEW = "AKIAOLDKEY0000000001", "AKIANEWKEY0000000002"
SINCE = datetime(2026, 12, 1, tzinfo=UTC)


def event(key: str, at: datetime, ip: str, agent: str, name: str = "GetCallerIdentity") -> dict[str, Any]:
    """One event in the shape of AWS's LookupEvents documentation."""
    detail = {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "accessKeyId": key, "userName": "alice"},
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "sts.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": agent,
    }
    return {
        "EventId": f"{ip}-{at.timestamp()}",
        "EventName": name,
        "ReadOnly": "true",
        "AccessKeyId": key,
        "EventTime": at,
        "EventSource": "sts.amazonaws.com",
        "Username": "alice",
        "Resources": [],
        "CloudTrailEvent": json.dumps(detail),
    }


def stubbed() -> tuple[Any, Stubber]:
    client = boto3.client("cloudtrail", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return client, Stubber(client)


def lookup(key: str, token: str | None = None) -> dict[str, Any]:
    query: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": key}],
        "StartTime": SINCE,
        "MaxResults": 50,
    }
    return query | ({"NextToken": token} if token else {})


def test_consumers_are_read_over_every_page_and_grouped_by_address_and_program() -> None:
    client, stub = stubbed()
    t = SINCE + timedelta(hours=1)
    legacy = "aws-cli/2.15.0 Python/3.11 Linux/6.1"
    stub.add_response(
        "lookup_events",
        {"Events": [event(KEY, t + timedelta(minutes=5), "10.0.3.7", legacy)], "NextToken": "page-2"},
        lookup(KEY),
    )
    stub.add_response(
        "lookup_events",
        {
            "Events": [
                event(KEY, t + timedelta(minutes=1), "10.0.3.7", legacy, "GetCallerIdentity"),
                event(KEY, t, "10.0.9.9", "Boto3/1.35.0 md/Botocore#1.35.0", "ListBuckets"),
            ]
        },
        lookup(KEY, "page-2"),
    )
    stub.add_response(
        "lookup_events",
        {"Events": [event(NEW, t + timedelta(minutes=9), "10.0.9.9", "Boto3/1.35.0 md/Botocore#1.35.0")]},
        lookup(NEW),
    )
    with stub:
        trail = Boto3Trail(boto3.Session(), "111122223333", clients={"us-east-1": client})
        old = trail.consumers(KEY, ["us-east-1", "us-east-1", ""], SINCE)
        new = trail.consumers(NEW, ["us-east-1"], SINCE)
    stub.assert_no_pending_responses()
    assert old.unavailable is None and old.regions == ("us-east-1",)
    first, second = old.consumers
    assert (first.source_ip, first.program, first.count) == ("10.0.3.7", "aws-cli/2.15.0", 2)
    assert first.first_seen == t + timedelta(minutes=1) and first.last_seen == t + timedelta(minutes=5)
    assert second.calls == ("sts:ListBuckets",) and second.count == 1
    said = moving(old, new, SINCE).describe()
    assert said.startswith("1 of 2 moved to the new key; still on the old key only: 10.0.3.7 aws-cli/2.15.0"), said


def test_a_busy_key_is_read_newest_first_up_to_a_limit_and_says_so() -> None:
    client, stub = stubbed()
    t = SINCE + timedelta(hours=1)
    page = [event(KEY, t - timedelta(seconds=i), "10.0.0.1", "busy/1.0") for i in range(3)]
    stub.add_response("lookup_events", {"Events": page, "NextToken": "more"}, lookup(KEY))
    with stub:
        found = Boto3Trail(boto3.Session(), "111122223333", clients={"us-east-1": client}).consumers(
            KEY, ["us-east-1"], SINCE, most=2
        )
    stub.assert_no_pending_responses()  # the second page was never asked for
    assert found.truncated and found.consumers[0].count == 2 and found.consumers[0].last_seen == t


def test_without_permission_it_says_so_and_carries_on() -> None:
    client, stub = stubbed()
    stub.add_client_error(
        "lookup_events", "AccessDeniedException", "not authorized to perform cloudtrail:LookupEvents", 400
    )
    with stub:
        found = Boto3Trail(boto3.Session(), "111122223333", clients={"us-east-1": client}).consumers(
            KEY, ["us-east-1"], SINCE
        )
    assert found.consumers == () and found.unavailable is not None
    assert "cloudtrail:LookupEvents" in found.unavailable and "WhoUsesAKey" in found.unavailable


def test_the_limiter_spaces_calls_per_account_and_region_only() -> None:
    limiter = RateLimiter(rate=20)  # 50 ms apart
    started = time.monotonic()
    for _ in range(5):
        limiter.acquire(("111122223333", "us-east-1"))
    same = time.monotonic() - started
    started = time.monotonic()
    for region in ("eu-west-1", "eu-west-2", "eu-west-3", "ap-south-1", "sa-east-1"):
        limiter.acquire(("111122223333", region))
    others = time.monotonic() - started
    assert same >= 0.2 and others < 0.15, (same, others)
