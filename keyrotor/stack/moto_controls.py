"""Local-only controls of the stack's moto server, for what moto's AWS API cannot do.

The demo, the tests and the benchmarks need keys that look old and unused, users by the thousand, and accounts
whose roles refuse to be assumed. AWS has no API for any of that, and moto only offers the AWS API, so the server
answers a few extra paths under ``/_keyrotor/`` (never signed, never gated) that reach into moto's backends
directly. :mod:`keyrotor.stack.seed` is their client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.iam.models import AccessKey, AccessKeyLastUsed, iam_backends
from werkzeug.wrappers import Request

from keyrotor.stack.moto_gate import REFUSED_ACCOUNTS, StartResponse, WSGIApp, find_access_key

#: The path prefix of the controls; requests under it never reach moto.
CONTROL_PREFIX = "/_keyrotor/"


class LocalControls:
    """Local-only controls that real AWS does not have, under ``/_keyrotor/`` (never signed, never gated).

    ``POST /_keyrotor/backdate`` with JSON ``{"access_key_id", "created", "last_used", "service", "region"}``
    (ISO 8601 times; ``last_used`` may be null) sets a key's CreateDate and last use, so the demo, the tests
    and the benchmarks can seed old and unused keys, which moto cannot do over its AWS API.

    ``POST /_keyrotor/seed`` with JSON ``{"users": [{"name", "tags": {key: value}, "keys": [{"status",
    "created", "last_used", "service", "region"}]}]}`` creates many users with their tags and (back-dated)
    keys in one request, in moto's default account, and answers ``{"users": {name: [access key ids]}}``:
    seeding 10,000 users one API call at a time would take minutes.

    ``POST /_keyrotor/refuse-assume-role`` with JSON ``{"account_ids": [...]}`` makes AssumeRole into those
    accounts answer AccessDenied (see :mod:`keyrotor.stack.moto_gate`).
    """

    def __init__(self, app: WSGIApp) -> None:
        """Wrap a WSGI application, which serves every request that is not a control.

        Args:
            app: The gated moto application.
        """
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request: run a control, or hand the request on.

        Args:
            environ: The WSGI environ.
            start_response: The WSGI ``start_response`` callable.

        Returns:
            The WSGI response body.
        """
        if not environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return self._app(environ, start_response)
        request = Request(environ)
        if request.path == "/_keyrotor/seed" and request.method == "POST":
            body = json.loads(request.get_data() or b"{}")
            created = create_users_in_backend(body.get("users", []), str(body.get("account_id") or DEFAULT_ACCOUNT_ID))
            answer = json.dumps({"users": created}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
            return [answer]
        if request.path == "/_keyrotor/refuse-assume-role" and request.method == "POST":
            REFUSED_ACCOUNTS.update(json.loads(request.get_data() or b"{}").get("account_ids", []))
            start_response("204 No Content", [])
            return []
        if request.path != "/_keyrotor/backdate" or request.method != "POST":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown keyrotor control\n"]
        body = json.loads(request.get_data() or b"{}")
        key = find_access_key(str(body.get("access_key_id", "")))
        if key is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such access key\n"]
        backdate_in_backend(key, body)
        start_response("204 No Content", [])
        return []


def backdate_in_backend(key: AccessKey, body: dict[str, Any]) -> None:
    """Set a moto key's creation date and last use (moto keeps naive UTC datetimes)."""
    if body.get("created"):
        key.create_date = _naive_utc(body["created"])
    if "last_used" in body:
        used = body["last_used"]
        key.last_used = (
            AccessKeyLastUsed(_naive_utc(used), body.get("service", "s3"), body.get("region", "us-east-1"))
            if used
            else None
        )


def create_users_in_backend(users: list[dict[str, Any]], account_id: str = DEFAULT_ACCOUNT_ID) -> dict[str, list[str]]:
    """Create IAM users with tags and back-dated keys directly in one of moto's accounts (default: its own).

    Args:
        users: ``{"name", "tags", "keys"}`` entries; each key is ``{"status", "created", "last_used",
            "service", "region"}`` with ISO 8601 times (``created`` and ``last_used`` optional).
        account_id: The account to create them in.

    Returns:
        Each user's new access key ids, in creation order.
    """
    backend = iam_backends[account_id]["aws"]
    created: dict[str, list[str]] = {}
    for user in users:
        tags = [{"Key": key, "Value": value} for key, value in user.get("tags", {}).items()]
        backend.create_user("us-east-1", user["name"], tags=tags)
        created[user["name"]] = []
        for spec in user.get("keys", []):
            key = backend.create_access_key(user["name"], status=spec.get("status", "Active"))
            backdate_in_backend(key, spec)
            created[user["name"]].append(key.access_key_id)
    return created


def _naive_utc(text: str) -> datetime:
    """An ISO 8601 time as the naive UTC datetime moto keeps (a time without an offset is taken as UTC)."""
    value = datetime.fromisoformat(text)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
