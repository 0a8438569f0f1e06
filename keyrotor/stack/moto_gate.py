"""A WSGI gate in front of moto that refuses the IAM user keys real AWS refuses.

moto's server accepts any request, whatever key signed it, and records the signing key's last use even when the
key is Inactive or wrong. That would let a test "prove" that no application call failed while the application was
still signing with a deactivated key. For IAM and STS requests signed with SigV4 (an ``Authorization`` header or
``X-Amz-*`` query parameters) by an ``AKIA`` key id, :class:`KeyStatusGate` answers as AWS does:

* an unknown, deleted or Inactive key gets HTTP 403 ``InvalidClientTokenId``;
* an Active key with the wrong secret gets HTTP 403 ``SignatureDoesNotMatch``;
* refused requests never reach moto, so the key's last-used data is unchanged.

Other key ids (the stack's admin credentials, ``ASIA`` session keys), unsigned requests and other services pass
through to moto untouched. Gated requests are checked and dispatched under one lock, so a key deactivated by a
concurrent request is either refused or used strictly before the deactivation.

The gate also refuses ``sts:AssumeRole`` into the accounts of :data:`REFUSED_ACCOUNTS`, as an SCP or a missing
role would, for the organization tests (the accounts are set through :mod:`keyrotor.stack.moto_controls`).
"""

from __future__ import annotations

import hmac
import io
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.core.exceptions import InvalidClientTokenIdError, SignatureDoesNotMatchError
from moto.iam.models import AccessKey, iam_backends
from moto.utilities.utils import PARTITION_NAMES
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]
AuthError = InvalidClientTokenIdError | SignatureDoesNotMatchError

#: Services whose SigV4-signed requests are authenticated; both speak the query protocol.
GATED_SERVICES = frozenset({"iam", "sts"})
#: The XML namespaces of IAM's and STS's query-protocol answers.
XML_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}
#: Accounts whose roles refuse AssumeRole (``POST /_keyrotor/refuse-assume-role``): an account behind an SCP, or
#: without the role, for the organization tests.
REFUSED_ACCOUNTS: set[str] = set()
_USER_KEY_PREFIX = "AKIA"
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
    found = locate_access_key(key_id)
    return None if found is None else found[1]


def locate_access_key(key_id: str) -> tuple[str, AccessKey] | None:
    """Like :func:`find_access_key`, with the id of the account the key belongs to."""
    for account_id, account in list(iam_backends.items()):
        for partition in PARTITION_NAMES:
            key = account[partition].access_keys.get(key_id)
            if key is not None:
                return account_id, key
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


def rewind_body(environ: dict[str, Any], request: Request) -> bytes:
    """Read the body and put a re-readable copy back into ``environ``, so that moto still reads all of it."""
    body = request.get_data()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


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
    rewind_body(environ, request)
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
        f'<ErrorResponse xmlns="{XML_NAMESPACES[service]}"><Error><Type>Sender</Type>'
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


class _AssumeRoleRefused(InvalidClientTokenIdError):
    """AWS's answer to AssumeRole when the role's trust policy (or an SCP) refuses the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.code = 403
        self.error_type = "AccessDenied"
        self.message = "User is not authorized to perform: sts:AssumeRole on this resource"


def _assumes_into_refused_account(environ: dict[str, Any], request: Request) -> bool:
    """Whether the request is an AssumeRole into one of :data:`REFUSED_ACCOUNTS` (its body is left re-readable)."""
    fields = parse_qs(rewind_body(environ, request).decode(errors="replace"))
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
