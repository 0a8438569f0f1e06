"""A CloudTrail of the local stack: every call signed with an IAM user key is recorded, and ``LookupEvents`` reads it.

moto 5 has no ``cloudtrail:LookupEvents``. The stack's server sees every signed request anyway, so this WSGI layer
records each one made with an ``AKIA`` key that AWS would accept (time, source IP, user agent, service, call,
region, the key's user) and answers ``LookupEvents`` as AWS does for management events: one lookup attribute,
``AccessKeyId``; ``StartTime`` / ``EndTime``; newest first; at most 50 events a page (``MaxResults``) with a
``NextToken``; each event with its ``CloudTrailEvent`` JSON. The region of a request is the region it was signed
for (IAM and global STS sign for us-east-1, where AWS records them too). Other lookup attributes are refused, as a
reminder that this is not a whole CloudTrail.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from werkzeug.wrappers import Request

from keyrotor.stack.moto_gate import (
    StartResponse,
    WSGIApp,
    locate_access_key,
    parse_sigv4,
    rewind_body,
)

LOOKUP_TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
#: Events kept (the oldest go first): a day of a few applications calling every second.
KEPT = 200_000
PAGE = 50


@dataclass(frozen=True)
class Recorded:
    """One call, as CloudTrail records it."""

    event_id: str
    at: datetime
    key_id: str
    user_name: str
    account_id: str
    region: str
    service: str
    name: str
    source_ip: str
    user_agent: str

    def as_event(self) -> dict[str, Any]:
        """The event as ``LookupEvents`` returns it."""
        detail = {
            "eventVersion": "1.08",
            "userIdentity": {
                "type": "IAMUser",
                "arn": f"arn:aws:iam::{self.account_id}:user/{self.user_name}",
                "accountId": self.account_id,
                "accessKeyId": self.key_id,
                "userName": self.user_name,
            },
            "eventTime": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": f"{self.service}.amazonaws.com",
            "eventName": self.name,
            "awsRegion": self.region,
            "sourceIPAddress": self.source_ip,
            "userAgent": self.user_agent,
            "eventID": self.event_id,
            "readOnly": self.name.startswith(("Get", "List", "Describe")),
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": self.account_id,
        }
        return {
            "EventId": self.event_id,
            "EventName": self.name,
            "ReadOnly": str(detail["readOnly"]).lower(),
            "AccessKeyId": self.key_id,
            "EventTime": self.at.timestamp(),
            "EventSource": detail["eventSource"],
            "Username": self.user_name,
            "Resources": [],
            "CloudTrailEvent": json.dumps(detail),
        }


class KeyTrail:
    """WSGI middleware: records calls signed with IAM user keys, and answers ``LookupEvents`` from them."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._events: deque[Recorded] = deque(maxlen=KEPT)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.headers.get("X-Amz-Target") == LOOKUP_TARGET:
            return self._lookup(environ, request, start_response)
        sig = parse_sigv4(request.headers, parse_qs(request.query_string.decode(), keep_blank_values=True))
        if sig is None or not sig.key_id.startswith("AKIA"):
            return self._app(environ, start_response)
        name = _operation(environ, request)
        answered: list[int] = []

        def recording(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            answered.append(int(status.split()[0]))
            return start_response(status, headers, *args)

        body = self._app(environ, recording)
        found = locate_access_key(sig.key_id)
        if answered and answered[0] < 400 and found is not None:
            account_id, key = found
            forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
            event = Recorded(
                event_id=str(uuid.uuid4()),
                at=datetime.now(UTC),
                key_id=sig.key_id,
                user_name=key.user_name or "",
                account_id=account_id,
                region=sig.region,
                service=sig.service,
                name=name,
                source_ip=forwarded or environ.get("REMOTE_ADDR", ""),
                user_agent=request.headers.get("User-Agent", ""),
            )
            with self._lock:
                self._events.append(event)
        return body

    def _lookup(self, environ: dict[str, Any], request: Request, start_response: StartResponse) -> list[bytes]:
        try:
            query = json.loads(rewind_body(environ, request) or b"{}")
            attributes = query.get("LookupAttributes") or []
            if len(attributes) != 1 or attributes[0].get("AttributeKey") != "AccessKeyId":
                return _error(
                    start_response,
                    "InvalidLookupAttributesException",
                    "the local stack looks events up by one AttributeKey, AccessKeyId, only",
                )
            key_id = attributes[0].get("AttributeValue", "")
            start = _time(query.get("StartTime"), datetime.min.replace(tzinfo=UTC))
            end = _time(query.get("EndTime"), datetime.max.replace(tzinfo=UTC))
            size = int(query.get("MaxResults") or PAGE)
            if not 1 <= size <= PAGE:
                return _error(start_response, "InvalidMaxResultsException", "MaxResults must be 1 to 50")
            offset = int(base64.b64decode(query["NextToken"]).decode()) if query.get("NextToken") else 0
        except (ValueError, TypeError, KeyError, AttributeError):
            return _error(start_response, "InvalidParameterException", "malformed LookupEvents request")
        region = parse_sigv4(request.headers, {})
        with self._lock:
            matching = [
                event
                for event in reversed(self._events)
                if event.key_id == key_id
                and start <= event.at <= end
                and (region is None or event.region == region.region)
            ]
        page = matching[offset : offset + size]
        answer: dict[str, Any] = {"Events": [event.as_event() for event in page]}
        if offset + size < len(matching):
            answer["NextToken"] = base64.b64encode(str(offset + size).encode()).decode()
        return _json(start_response, HTTPStatus.OK, answer)


def _operation(environ: dict[str, Any], request: Request) -> str:
    """The call's name: the query protocol's ``Action`` (in the query string or the form body), or the JSON
    protocol's ``X-Amz-Target``."""
    target = request.headers.get("X-Amz-Target", "")
    if target:
        return target.rsplit(".", 1)[-1]
    action = parse_qs(request.query_string.decode()).get("Action")
    if action:
        return action[0]
    if request.mimetype == "application/x-www-form-urlencoded":
        fields = parse_qs(rewind_body(environ, request).decode(errors="replace"))
        return fields.get("Action", ["?"])[0]
    return request.method


def _time(value: object, default: datetime) -> datetime:
    if value is None:
        return default
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _json(start_response: StartResponse, status: HTTPStatus, answer: dict[str, Any]) -> list[bytes]:
    body = json.dumps(answer).encode()
    start_response(
        f"{status.value} {status.phrase}",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _error(start_response: StartResponse, code: str, message: str) -> list[bytes]:
    return _json(start_response, HTTPStatus.BAD_REQUEST, {"__type": code, "Message": message})
