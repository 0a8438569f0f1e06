"""moto's IAM and STS over HTTP, refusing the credentials real AWS refuses.

moto's server accepts any request, whatever key signed it, and records the
signing key's last use even when the key is Inactive or wrong. That would let
a test "prove" that no application call failed while the application was still
signing with a deactivated key. This module puts a small WSGI gate in front of
moto's own application. For IAM and STS requests signed with SigV4 (an
``Authorization`` header or ``X-Amz-*`` query parameters) by an ``AKIA`` key id:

* an unknown, deleted or Inactive key gets HTTP 403 ``InvalidClientTokenId``;
* an Active key with the wrong secret gets HTTP 403 ``SignatureDoesNotMatch``;
* refused requests never reach moto, so the key's last-used data is unchanged.

Other key ids (the stack's admin credentials, ``ASIA`` session keys), unsigned
requests and other services pass through to moto untouched. Gated requests are
checked and dispatched under one lock, so a key deactivated by a concurrent
request is either refused or used strictly before the deactivation.

Two IAM answers are made closer to AWS's: moto builds the credential report
afresh on every ``GetCredentialReport`` but dates it 2015-02-02, so here its
``GeneratedTime`` is the time it was built; and ``GetAccountAuthorizationDetails``
for users (``Filter=User``, what ``keyrotor audit`` reads tags from) is paged by
``MaxItems``/``Marker`` as AWS pages it (moto returns everything at once) and
written directly, as moto's generic serializer takes about 0.3 ms a user. moto's
dispatcher also remembers which backend serves a host instead of listing its own
package folder on every request.

Run it with ``python -m keyrotor.stack.moto_server --host 127.0.0.1 --port 5000``.
"""

from __future__ import annotations

import argparse
import hmac
import io
import json
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.core.exceptions import InvalidClientTokenIdError, SignatureDoesNotMatchError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.iam.models import AccessKey, AccessKeyLastUsed, User, iam_backends
from moto.iam.responses import IamResponse
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.utilities.utils import PARTITION_NAMES
from werkzeug.datastructures import Headers
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]
AuthError = InvalidClientTokenIdError | SignatureDoesNotMatchError

#: Services whose SigV4-signed requests are authenticated; both speak the query protocol.
GATED_SERVICES = frozenset({"iam", "sts"})
_XML_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}
_USER_KEY_PREFIX = "AKIA"
_moto_authorization_details = IamResponse.get_account_authorization_details
_HEADER_FIELD = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


@dataclass(frozen=True)
class SigV4:
    """The SigV4 signature a request carries.

    Attributes:
        key_id: The access key id of the credential scope.
        region: The region of the credential scope.
        service: The signing name of the credential scope, e.g. ``iam``.
        signed_headers: Lower-case names of the signed headers.
        signature: The hex signature the client sent.
        timestamp: The ``X-Amz-Date`` value the signature was made with.
        in_query: True for a presigned URL (``X-Amz-*`` query parameters).
    """

    key_id: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    in_query: bool


def parse_sigv4(headers: Headers, query: dict[str, list[str]]) -> SigV4 | None:
    """Read the SigV4 signature of a request, from its headers or its query string.

    Args:
        headers: The request headers.
        query: The parsed query string of the request.

    Returns:
        The signature, or None when the request carries no well-formed SigV4 signature.
    """
    authorization = headers.get("Authorization", "")
    if authorization.startswith("AWS4-HMAC-SHA256 "):
        fields = dict(_HEADER_FIELD.findall(authorization))
        timestamp = headers.get("X-Amz-Date", "")
        in_query = False
    elif "X-Amz-Credential" in query:
        fields = {
            "Credential": query["X-Amz-Credential"][0],
            "SignedHeaders": query.get("X-Amz-SignedHeaders", [""])[0],
            "Signature": query.get("X-Amz-Signature", [""])[0],
        }
        timestamp = query.get("X-Amz-Date", [""])[0]
        in_query = True
    else:
        return None
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5:
        return None
    return SigV4(
        key_id=scope[0],
        region=scope[2],
        service=scope[3],
        signed_headers=tuple(fields.get("SignedHeaders", "").split(";")),
        signature=fields.get("Signature", ""),
        timestamp=timestamp,
        in_query=in_query,
    )


def find_access_key(key_id: str) -> AccessKey | None:
    """Find an IAM access key in moto's backends, in any account and partition.

    Args:
        key_id: The access key id.

    Returns:
        moto's key object, or None when no such key exists (never created, or deleted).
    """
    for account in list(iam_backends.values()):
        for partition in PARTITION_NAMES:
            key = account[partition].access_keys.get(key_id)
            if key is not None:
                return key
    return None


def expected_signature(sig: SigV4, secret: str, request: Request, raw_uri: str) -> str:
    """Compute the signature the request must carry if it was signed with ``secret``.

    Args:
        sig: The signature the request carries; its scope and signed headers are reused.
        secret: The secret access key of ``sig.key_id``.
        request: The request; its body must be re-readable (``get_data`` caches it).
        raw_uri: The path and query string exactly as sent.

    Returns:
        The hex SigV4 signature.
    """
    url = _strip_query_param(raw_uri, "X-Amz-Signature") if sig.in_query else raw_uri
    auth_class = SigV4QueryAuth if sig.in_query else SigV4Auth
    auth = auth_class(Credentials(sig.key_id, secret), sig.service, sig.region)
    signed = AWSRequest(
        method=request.method,
        url=url,
        data=request.get_data(),
        headers={name: request.headers.get(name, "") for name in sig.signed_headers},
    )
    signed.context["timestamp"] = sig.timestamp
    canonical_request = auth.canonical_request(signed)
    return str(auth.signature(auth.string_to_sign(signed, canonical_request), signed))


def _strip_query_param(raw_uri: str, name: str) -> str:
    """Remove one query parameter from a raw URI, keeping the others byte for byte."""
    path, _, query = raw_uri.partition("?")
    kept = [pair for pair in query.split("&") if pair.partition("=")[0] != name]
    return f"{path}?{'&'.join(kept)}" if kept else path


def refusal(environ: dict[str, Any], request: Request, sig: SigV4) -> AuthError | None:
    """Decide whether AWS would refuse a request signed with an IAM user key.

    Args:
        environ: The WSGI environ; its body stream is replaced by a re-readable copy.
        request: The request wrapping ``environ``.
        sig: The request's SigV4 signature, made with an ``AKIA`` key id.

    Returns:
        The error AWS would answer with, or None when the request is authentic.
    """
    key = find_access_key(sig.key_id)
    if key is None or key.status != "Active":
        return InvalidClientTokenIdError()
    body = request.get_data()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path.rstrip("?")
    wanted = expected_signature(sig, key.secret_access_key, request, raw_uri)
    if not hmac.compare_digest(wanted, sig.signature):
        return SignatureDoesNotMatchError()
    return None


def error_response(error: AuthError, service: str, start_response: StartResponse) -> list[bytes]:
    """Answer with an AWS query-protocol XML error, as IAM and STS do.

    Args:
        error: moto's error, which carries the AWS status, code and message.
        service: ``iam`` or ``sts``, for the XML namespace.
        start_response: The WSGI ``start_response`` callable.

    Returns:
        The WSGI response body.
    """
    request_id = str(uuid.uuid4())
    body = (
        f'<ErrorResponse xmlns="{_XML_NAMESPACES[service]}"><Error><Type>Sender</Type>'
        f"<Code>{error.error_type}</Code><Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
    start_response(
        f"{error.code} {HTTPStatus(error.code).phrase}",
        [
            ("Content-Type", "text/xml"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
        ],
    )
    return [body]


#: Accounts whose roles refuse AssumeRole (``POST /_keyrotor/refuse-assume-role``): an account behind an SCP, or
#: without the role, for the organization tests.
REFUSED_ACCOUNTS: set[str] = set()


class _AssumeRoleRefused(InvalidClientTokenIdError):
    """AWS's answer to AssumeRole when the role's trust policy (or an SCP) refuses the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.code = 403
        self.error_type = "AccessDenied"
        self.message = "User is not authorized to perform: sts:AssumeRole on this resource"


def _assumes_into_refused_account(environ: dict[str, Any], request: Request) -> bool:
    body = request.get_data()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    fields = parse_qs(body.decode(errors="replace"))
    if fields.get("Action", [""])[0] != "AssumeRole":
        return False
    role = fields.get("RoleArn", [""])[0]
    return any(f":{account}:" in role for account in REFUSED_ACCOUNTS)


class KeyStatusGate:
    """WSGI middleware that authenticates IAM-user-key requests before moto sees them."""

    def __init__(self, app: WSGIApp) -> None:
        """Wrap a WSGI application.

        Args:
            app: moto's application.
        """
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request: refuse it as AWS would, or hand it to moto.

        Args:
            environ: The WSGI environ.
            start_response: The WSGI ``start_response`` callable.

        Returns:
            The WSGI response body.
        """
        request = Request(environ)
        query = parse_qs(request.query_string.decode(), keep_blank_values=True)
        sig = parse_sigv4(request.headers, query)
        if sig is None or sig.service not in GATED_SERVICES:
            return self._app(environ, start_response)
        if sig.service == "sts" and REFUSED_ACCOUNTS and _assumes_into_refused_account(environ, request):
            return error_response(_AssumeRoleRefused(), "sts", start_response)
        with self._lock:
            if sig.key_id.startswith(_USER_KEY_PREFIX):
                error = refusal(environ, request, sig)
                if error is not None:
                    return error_response(error, sig.service, start_response)
            return self._app(environ, start_response)


class LocalControls:
    """Local-only controls that real AWS does not have, under ``/_keyrotor/`` (never signed, never gated).

    ``POST /_keyrotor/backdate`` with JSON ``{"access_key_id", "created", "last_used", "service", "region"}``
    (ISO 8601 times; ``last_used`` may be null) sets a key's CreateDate and last use, so the demo, the tests
    and the benchmarks can seed old and unused keys, which moto cannot do over its AWS API.

    ``POST /_keyrotor/seed`` with JSON ``{"users": [{"name", "tags": {key: value}, "keys": [{"status",
    "created", "last_used", "service", "region"}]}]}`` creates many users with their tags and (back-dated)
    keys in one request, in moto's default account, and answers ``{"users": {name: [access key ids]}}``:
    seeding 10,000 users one API call at a time would take minutes.
    """

    def __init__(self, app: WSGIApp) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith("/_keyrotor/"):
            return self._app(environ, start_response)
        request = Request(environ)
        if request.path == "/_keyrotor/seed" and request.method == "POST":
            body = json.loads(request.get_data() or b"{}")
            created = seed_users(body.get("users", []), str(body.get("account_id") or DEFAULT_ACCOUNT_ID))
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
        backdate_key(key, body)
        start_response("204 No Content", [])
        return []


def backdate_key(key: AccessKey, body: dict[str, Any]) -> None:
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


def seed_users(users: list[dict[str, Any]], account_id: str = DEFAULT_ACCOUNT_ID) -> dict[str, list[str]]:
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
            backdate_key(key, spec)
            created[user["name"]].append(key.access_key_id)
    return created


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves each host.

    moto lists its own package folder on disk, twice per request, to find out; that was a third of the time of a
    small IAM request, and it penalised paginated reads.
    """

    def __init__(self, create_app: Callable[[Any], Any]) -> None:
        super().__init__(create_app)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        """The backend serving ``host``, looked up once per host (moto calls this under its lock)."""
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


def _credential_report(self: IamResponse) -> ActionResult:
    """``GetCredentialReport`` dated when it was built (moto builds it on each call but dates it 2015)."""
    content = self.backend.get_credential_report()
    built = datetime.now(UTC).replace(microsecond=0)
    return ActionResult({"Content": content, "ReportFormat": "text/csv", "GeneratedTime": built})


def _authorization_details(self: IamResponse) -> str | ActionResult:
    """``GetAccountAuthorizationDetails``: users alone are paged and written directly, the rest goes to moto."""
    if self._get_param("Filter", []) != ["User"]:
        return _moto_authorization_details(self)
    backend = self.backend
    users = list(backend.users.values())
    start = int(self._get_param("Marker") or 0)
    end = start + self._get_int_param("MaxItems", 100)
    paging = (
        f"<IsTruncated>true</IsTruncated><Marker>{end}</Marker>"
        if end < len(users)
        else ("<IsTruncated>false</IsTruncated>")
    )
    groups: dict[str, list[str]] = {}
    for group in backend.groups.values():
        for member in group.users:
            groups.setdefault(member.name, []).append(group.name)
    members = "".join(_user_detail(user, groups.get(user.name, ()), backend.tagger.tags) for user in users[start:end])
    return (
        f'<GetAccountAuthorizationDetailsResponse xmlns="{_XML_NAMESPACES["iam"]}">'
        f"<GetAccountAuthorizationDetailsResult>{paging}<UserDetailList>{members}</UserDetailList>"
        "<GroupDetailList/><RoleDetailList/><Policies/></GetAccountAuthorizationDetailsResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</GetAccountAuthorizationDetailsResponse>"
    )


def _user_detail(user: User, groups: Iterable[str], tags_by_arn: dict[str, dict[str, str | None]]) -> str:
    """One ``UserDetail`` member: identity, inline and attached policies, groups and tags (empty lists skipped)."""
    arn = user.arn
    parts = [
        f"<member><Path>{escape(user.path)}</Path><UserName>{escape(user.name)}</UserName><UserId>{user.id}</UserId>"
        f"<Arn>{escape(arn)}</Arn><CreateDate>{user.create_date.isoformat()[:19]}Z</CreateDate>"
    ]
    if user.policies:
        parts.append(
            "<UserPolicyList>"
            + "".join(
                f"<member><PolicyName>{escape(name)}</PolicyName><PolicyDocument>{escape(quote(str(document)))}"
                "</PolicyDocument></member>"
                for name, document in user.policies.items()
            )
            + "</UserPolicyList>"
        )
    if groups:
        parts.append("<GroupList>" + "".join(f"<member>{escape(group)}</member>" for group in groups) + "</GroupList>")
    if user.managed_policies:
        parts.append(
            "<AttachedManagedPolicies>"
            + "".join(
                f"<member><PolicyName>{escape(policy.name)}</PolicyName><PolicyArn>{escape(policy.arn)}</PolicyArn>"
                "</member>"
                for policy in user.managed_policies.values()
            )
            + "</AttachedManagedPolicies>"
        )
    tags = tags_by_arn.get(arn)
    if tags:
        parts.append(
            "<Tags>"
            + "".join(
                f"<member><Key>{escape(key)}</Key><Value>{escape(value or '')}</Value></member>"
                for key, value in tags.items()
            )
            + "</Tags>"
        )
    parts.append("</member>")
    return "".join(parts)


def _naive_utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def create_app() -> LocalControls:
    """Build moto's server application behind the key-status gate, with the local-only controls.

    Returns:
        A WSGI application serving all of moto's services, IAM and STS gated.
    """
    IamResponse.get_credential_report = _credential_report  # type: ignore[method-assign]
    IamResponse.get_account_authorization_details = _authorization_details  # type: ignore[method-assign,assignment]
    return LocalControls(KeyStatusGate(_Dispatcher(create_backend_app)))


def create_server(host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """Create a threaded HTTP server for :func:`create_app`, e.g. to run in-process.

    Call ``serve_forever()`` (in a thread, for in-process use) and ``shutdown()`` when done.

    Args:
        host: The address to bind.
        port: The port to bind; 0 picks a free one (see ``server.server_port``).

    Returns:
        The bound, not yet serving, server.
    """
    return make_server(host, port, create_app(), threaded=True, request_handler=MotoRequestHandler)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into a normal exit."""
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """Serve the gated moto application until terminated.

    Args:
        argv: Command-line arguments (``--host``, ``--port``); defaults to ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description="moto's IAM/STS server, refusing inactive and unknown keys.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to bind (default: 5000)")
    args = parser.parse_args(argv)
    server = create_server(args.host, args.port)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    print(f"keyrotor moto server on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
