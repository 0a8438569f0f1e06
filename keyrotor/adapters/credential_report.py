"""Fetch what the audit needs from IAM without one call per user: the credential report and every user's tags.

* The credential report holds every user's key state in one CSV document. AWS generates it asynchronously
  (``GenerateCredentialReport`` answers STARTED, INPROGRESS, then COMPLETE) and at most every 4 hours, returning
  the previous report in between, so the result says when the data was generated.
* Tags come from ``GetAccountAuthorizationDetails(Filter=["User"])``, paged (``ListUsers`` does not return tags,
  and the Resource Groups Tagging API does not cover IAM users). botocore's generic parser would turn every
  field of every user (policies, groups...) into Python objects, about 0.1 ms a user; instead a ``before-parse``
  hook hands botocore only the page's paging fields and gives the page to a worker thread, where ElementTree
  reads the users that have tags while the next page is on its way.
* Key ids are not in the report: findings name a key by its slot (``access_key_1``); remediation reads the ids
  live with ``ListAccessKeys`` for the users it acts on (:mod:`keyrotor.remediation.survey`).

Every function takes a boto3 IAM client; failures are translated into keyrotor errors once, here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from keyrotor.adapters.accounts import RoleToAssume, assumed_session, caller_account, resolve_accounts
from keyrotor.adapters.iam import call, translate
from keyrotor.audit.cis import AuditPolicy
from keyrotor.audit.findings import AuditResult, Finding
from keyrotor.audit.report import CredentialReport, parse_report
from keyrotor.audit.rules import conclude, evaluate, judge
from keyrotor.audit.settings import AuditSettings
from keyrotor.core.errors import AwsError, KeyrotorError

#: Called while waiting for the report with its state and the seconds waited so far.
WaitCallback = Callable[[str, float], None]

_COMPLETE = "COMPLETE"
# GetCredentialReport's answers when there is no complete, current report to return: generate (again) and wait.
_NOT_READY_CODES = frozenset({"ReportInProgress", "ReportNotPresent", "ReportExpired"})
_FIRST_POLL_SECONDS = 0.25
_MAX_POLL_SECONDS = 5.0
_TAGS_EVENT = "before-parse.iam.GetAccountAuthorizationDetails"
_TAGS_HOOK_ID = "keyrotor-user-tags"
_PAGE_SIZE = 1000  # the largest page IAM serves
# The paging fields of a GetAccountAuthorizationDetails answer; no UserDetail has elements of these names.
_PAGING_FIELD = re.compile(rb"<(IsTruncated|Marker)>([^<]*)</(?:IsTruncated|Marker)>")
_PAGED = b"<R><GetAccountAuthorizationDetailsResult>%s</GetAccountAuthorizationDetailsResult></R>"
_MEMBER_TOKEN = re.compile(rb"<(/?)member>")


def run_audit(
    settings: AuditSettings,
    only_users: Sequence[str] = (),
    max_attempts: int = 10,
    on_wait: WaitCallback | None = None,
) -> AuditResult:
    """The audit as ``keyrotor audit`` and the remediation run it: a standard-retry IAM client and these settings."""
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
    iam = boto3.session.Session().client("iam", config=config)
    return audit_account(iam, settings.policy(only_users), settings.report_timeout, on_wait)


def audit_account(
    iam: Any,
    policy: AuditPolicy,
    timeout: timedelta = timedelta(minutes=5),
    on_wait: WaitCallback | None = None,
) -> AuditResult:
    """Audit the account: fetch the tags (unless no tag exempts) while the report is fetched and judged.

    Args:
        iam: A boto3 IAM client.
        policy: Thresholds, exemptions and scope.
        timeout: How long to wait for the report's generation.
        on_wait: Told about each wait for the report (for progress on stderr).

    Returns:
        The verdict on every user in scope.

    Raises:
        AwsError: IAM refused or failed, or the report was not ready within ``timeout``.
    """
    if not policy.exempt_tag:
        report = fetch_credential_report(iam, timeout, on_wait)
        return evaluate(report, {}, policy, datetime.now(UTC))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="user-tags") as pool:
        pages = _TagPages(pool)
        with pages.hooked(iam):
            fetched = pool.submit(_page_through, iam, pages)
            report = fetch_credential_report(iam, timeout, on_wait)
            now = datetime.now(UTC)
            verdicts = judge(report, policy, now)
            fetched.result()
        return conclude(report, verdicts, pages.tags(), policy, now)


def fetch_credential_report(
    iam: Any,
    timeout: timedelta = timedelta(minutes=5),
    on_wait: WaitCallback | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CredentialReport:
    """Have IAM generate the credential report (or reuse one under 4 hours old), wait for it, and parse it.

    Args:
        iam: A boto3 IAM client.
        timeout: How long to wait for the generation; polls back off from 0.25 s to 5 s.
        on_wait: Told about each wait, with the state IAM reported and the seconds waited.
        sleep: Sleeps between polls (injected by tests).
        clock: Monotonic seconds (injected by tests).

    Returns:
        The parsed report, with its generation time.

    Raises:
        AwsError: IAM refused or failed, or the report was not ready within ``timeout``.
    """
    started = clock()
    delay = _FIRST_POLL_SECONDS
    while True:
        state = str(call(iam, "generate the credential report", "generate_credential_report")["State"])
        if state == _COMPLETE:
            response = _get_report(iam)
            if response is not None:
                return parse_report(response["Content"], response["GeneratedTime"])
        waited = clock() - started
        if waited + delay > timeout.total_seconds():
            raise AwsError(
                f"IAM had not generated the credential report after {waited:.0f} s (state {state}); try again later"
            )
        if on_wait is not None:
            on_wait(state, waited)
        sleep(delay)
        delay = min(delay * 2, _MAX_POLL_SECONDS)


def _get_report(iam: Any) -> dict[str, Any] | None:
    """``GetCredentialReport``, or None when IAM says there is no current report to return yet."""
    try:
        response: dict[str, Any] = iam.get_credential_report()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _NOT_READY_CODES:
            return None
        raise translate(error, "download the credential report") from None
    except BotoCoreError as error:
        raise translate(error, "download the credential report") from None
    return response


def _page_through(iam: Any, pages: _TagPages) -> None:
    """Request every page of users while ``pages`` is hooked on ``iam``; it keeps what they hold."""
    paginator = iam.get_paginator("get_account_authorization_details")
    try:
        for _ in paginator.paginate(Filter=["User"], PaginationConfig={"PageSize": _PAGE_SIZE}):
            if not pages.hooked_on:
                return
    except (ClientError, BotoCoreError) as error:
        raise translate(error, "read the IAM users' tags") from None


class _TagPages:
    """A botocore ``before-parse`` hook that takes the users' tags out of ``GetAccountAuthorizationDetails`` pages.

    botocore is left the paging fields alone to parse; each page's XML is read by ``pool`` meanwhile.
    """

    def __init__(self, pool: Executor) -> None:
        self._pool = pool
        self._pages: list[Future[dict[str, dict[str, str]]]] = []
        self.hooked_on = False

    @contextmanager
    def hooked(self, iam: Any) -> Iterator[None]:
        """Intercept ``iam``'s answers meanwhile (paging stops when this ends, e.g. on an error elsewhere).

        Enter it before other threads use the client: botocore's event registry is not made to change under them.
        """
        iam.meta.events.register(_TAGS_EVENT, self, unique_id=_TAGS_HOOK_ID)
        self.hooked_on = True
        try:
            yield
        finally:
            self.hooked_on = False
            iam.meta.events.unregister(_TAGS_EVENT, unique_id=_TAGS_HOOK_ID)

    def __call__(self, response_dict: dict[str, Any], **_: Any) -> None:
        """Keep a successful page for parsing and leave botocore only its paging fields."""
        if response_dict.get("status_code") != 200:
            return
        body: bytes = response_dict["body"]
        self._pages.append(self._pool.submit(_names_and_tags, body))
        fields = b"".join(b"<%s>%s</%s>" % (name, value, name) for name, value in _PAGING_FIELD.findall(body))
        response_dict["body"] = _PAGED % fields

    def tags(self) -> dict[str, dict[str, str]]:
        """The tags of every user that has any, once all pages are read."""
        tags: dict[str, dict[str, str]] = {}
        for page in self._pages:
            tags.update(page.result())
        return tags


def _names_and_tags(body: bytes) -> dict[str, dict[str, str]]:
    """The tags of each user of one ``GetAccountAuthorizationDetails`` page that has any.

    Only the users that have a ``<Tags>`` element are parsed, each alone: building the elements of every user of
    a page was the largest share of the audit's own work.
    """
    tags: dict[str, dict[str, str]] = {}
    for member in _tagged_user_details(body):
        user = ElementTree.fromstring(member)
        pairs = {tag.findtext("Key") or "": tag.findtext("Value") or "" for tag in user.iterfind("Tags/member")}
        if pairs:
            tags[user.findtext("UserName") or ""] = pairs
    return tags


def _tagged_user_details(body: bytes) -> Iterator[bytes]:
    """The XML of each ``UserDetailList`` member holding ``<Tags>``, delimited by counting ``<member>`` nesting.

    Element names cannot occur inside text (``<`` is escaped there), so the tokens are exactly the elements.

    Raises:
        AwsError: The list is not closed, or its members do not nest.
    """
    start = body.find(b"<UserDetailList>")
    if start < 0:  # an empty list is written <UserDetailList/>
        return
    end = body.find(b"</UserDetailList>", start)
    if end < 0:
        raise AwsError("GetAccountAuthorizationDetails answered with an unterminated user list")
    depth, opened = 0, 0
    for token in _MEMBER_TOKEN.finditer(body, start, end):
        if not token.group(1):
            if depth == 0:
                opened = token.start()
            depth += 1
            continue
        depth -= 1
        if depth < 0:
            break
        if depth == 0 and body.find(b"<Tags>", opened, token.start()) >= 0:
            yield body[opened : token.end()]
    if depth != 0:
        raise AwsError("GetAccountAuthorizationDetails answered with a malformed user list")


@dataclass(frozen=True)
class AccountsAudit:
    """The audit of several accounts: each one's result, and why any could not be audited."""

    results: dict[str, AuditResult]
    failures: dict[str, str]

    @property
    def findings(self) -> list[tuple[str, Finding]]:
        return [(account, finding) for account, result in self.results.items() for finding in result.findings]

    def to_json(self) -> dict[str, Any]:
        """One document: every finding and exemption with its ``account_id``, a summary per account and in all,
        and the accounts that could not be audited (with the reason)."""
        accounts = []
        findings: list[dict[str, Any]] = []
        exempt: list[dict[str, Any]] = []
        for account, result in sorted(self.results.items()):
            single = result.to_json()
            findings += [{"account_id": account} | item for item in single["findings"]]
            exempt += [{"account_id": account} | item for item in single["exempt"]]
            accounts.append(
                {
                    "account_id": account,
                    "generated_at": single["generated_at"],
                    "report_age_seconds": single["report_age_seconds"],
                    "summary": single["summary"],
                }
            )
        summary = _sum_summaries([result.summary() for result in self.results.values()])
        summary["accounts"] = len(self.results) + len(self.failures)
        summary["accounts_not_audited"] = len(self.failures)
        oldest = min((r.generated_at for r in self.results.values()), default=None)
        return {
            "generated_at": oldest.isoformat() if oldest else None,
            "report_age_seconds": max((a["report_age_seconds"] for a in accounts), default=None),
            "findings": findings,
            "exempt": exempt,
            "summary": summary,
            "accounts": accounts,
            "not_audited": [{"account_id": a, "reason": r} for a, r in sorted(self.failures.items())],
        }


def _sum_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    if not summaries:
        return {
            "users": 0,
            "compliant_users": 0,
            "users_with_findings": 0,
            "exempt_users": 0,
            "findings": 0,
            "findings_by_rule": {},
            "root_active_keys": 0,
        }
    total = dict(summaries[0])
    for summary in summaries[1:]:
        for name in ("users", "compliant_users", "users_with_findings", "exempt_users", "findings", "root_active_keys"):
            total[name] = (total.get(name) or 0) + (summary.get(name) or 0)
        total["findings_by_rule"] = {
            rule: total["findings_by_rule"].get(rule, 0) + count for rule, count in summary["findings_by_rule"].items()
        }
    return total


def audit_accounts(
    settings: AuditSettings,
    only_users: Sequence[str] = (),
    max_attempts: int = 10,
    on_wait: WaitCallback | None = None,
    *,
    accounts: Sequence[str] = (),
    organization: bool = False,
    role: RoleToAssume | None = None,
    concurrency: int = 8,
) -> AccountsAudit:
    """Audit the accounts (``--account`` ids, ``--organization``'s, else the caller's own), ``concurrency`` at once:
    their credential reports are generated at the same time. One account that cannot be audited (the role
    refused, an SCP, the report denied) is a reason in ``failures``, never an error for the others."""
    base = boto3.session.Session()
    role = role or RoleToAssume()
    targets = resolve_accounts(base, accounts, organization)
    caller = caller_account(base) if (accounts or organization) else targets[0]
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
    policy = settings.policy(only_users)

    def one(account: str) -> AuditResult:
        session = base if account == caller else assumed_session(base, account, role, "audit", max_attempts)
        return audit_account(session.client("iam", config=config), policy, settings.report_timeout, on_wait)

    results: dict[str, AuditResult] = {}
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets))), thread_name_prefix="account") as pool:
        futures = {account: pool.submit(one, account) for account in targets}
        for account, future in futures.items():
            try:
                results[account] = future.result()
            except KeyrotorError as error:
                failures[account] = str(error)
    if len(targets) == 1 and failures:  # one account asked for: its error is the command's error
        raise AwsError(failures[targets[0]])
    return AccountsAudit(results, failures)
