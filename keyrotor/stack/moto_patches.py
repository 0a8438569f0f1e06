"""Changes to moto itself: IAM answers closer to AWS's, and a dispatcher that does not list its package per request.

* moto builds the credential report afresh on every ``GetCredentialReport`` but dates it 2015-02-02, so a reader
  that checks the report's age (``keyrotor audit``) would always see it stale: here its ``GeneratedTime`` is the
  time it was built.
* ``GetAccountAuthorizationDetails`` for users (``Filter=User``, what ``keyrotor audit`` reads tags from) is paged
  by ``MaxItems``/``Marker`` as AWS pages it (moto returns everything at once, so paging code went untested) and
  written directly, as moto's generic serializer takes about 0.3 ms a user.
* moto's dispatcher lists its own package folder on disk, twice per request, to find the backend serving a host;
  :class:`CachingDispatcher` remembers the answer.

The IAM changes replace methods of moto's :class:`IamResponse` class, so they apply to the whole process: only
:func:`patch_iam_responses` does it, called when the server application is built.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from moto.core.responses import ActionResult
from moto.iam.models import User
from moto.iam.responses import IamResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from keyrotor.stack.moto_gate import XML_NAMESPACES

# moto's own method, taken before any patch, for the requests the replacement leaves to it.
_moto_authorization_details = IamResponse.get_account_authorization_details


class CachingDispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves each host.

    moto lists its own package folder on disk, twice per request, to find out; that was a third of the time of a
    small IAM request, and it penalised paginated reads.
    """

    def __init__(self, create_app: Callable[[Any], Any]) -> None:
        """Wrap moto's backend application factory, as moto's dispatcher does."""
        super().__init__(create_app)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        """The backend serving ``host``, looked up once per host (moto calls this under its lock)."""
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


def patch_iam_responses() -> None:
    """Replace moto's ``GetCredentialReport`` and ``GetAccountAuthorizationDetails`` answers (idempotent)."""
    IamResponse.get_credential_report = credential_report  # type: ignore[method-assign]
    IamResponse.get_account_authorization_details = authorization_details  # type: ignore[method-assign,assignment]


def credential_report(self: IamResponse) -> ActionResult:
    """``GetCredentialReport`` dated when it was built (moto builds it on each call but dates it 2015)."""
    content = self.backend.get_credential_report()
    built = datetime.now(UTC).replace(microsecond=0)
    return ActionResult({"Content": content, "ReportFormat": "text/csv", "GeneratedTime": built})


def authorization_details(self: IamResponse) -> str | ActionResult:
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
        f'<GetAccountAuthorizationDetailsResponse xmlns="{XML_NAMESPACES["iam"]}">'
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
