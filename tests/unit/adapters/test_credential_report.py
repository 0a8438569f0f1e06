from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from keyrotor.adapters.credential_report import _names_and_tags, fetch_credential_report
from keyrotor.core.errors import AwsError
from tests.unit.audit.test_rules import HEADER, NOW, line


class FakeReportIam:
    """generate/get_credential_report answering from scripts."""

    def __init__(self, states: list[str], gets: list[str | None], error: str | None = None) -> None:
        self.states, self.gets, self.error = states, gets, error

    def generate_credential_report(self) -> dict[str, str]:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "no"}}, "GenerateCredentialReport")
        return {"State": self.states.pop(0)}

    def get_credential_report(self) -> dict[str, Any]:
        code = self.gets.pop(0)
        if code is not None:
            raise ClientError({"Error": {"Code": code, "Message": "not yet"}}, "GetCredentialReport")
        return {"Content": f"{HEADER}\n{line('alice')}\n".encode(), "GeneratedTime": NOW}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_report_generation_is_polled_with_backoff_and_progress() -> None:
    clock, waits = Clock(), []
    iam = FakeReportIam(["STARTED", "INPROGRESS", "INPROGRESS", "COMPLETE", "COMPLETE"], ["ReportInProgress", None])
    parsed = fetch_credential_report(
        iam, timedelta(minutes=1), lambda state, waited: waits.append(state), sleep=clock.sleep, clock=lambda: clock.now
    )
    assert [row.user for row in parsed.rows] == ["alice"]
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0]
    assert waits == ["STARTED", "INPROGRESS", "INPROGRESS", "COMPLETE"]


def test_report_generation_wait_is_bounded() -> None:
    clock = Clock()
    iam = FakeReportIam(["INPROGRESS"] * 100, [])
    with pytest.raises(AwsError, match="had not generated the credential report") as raised:
        fetch_credential_report(iam, timedelta(seconds=10), sleep=clock.sleep, clock=lambda: clock.now)
    assert raised.value.exit_code == 8 and sum(clock.sleeps) <= 10


def test_access_denied_is_an_aws_error() -> None:
    with pytest.raises(AwsError, match="access denied"):
        fetch_credential_report(FakeReportIam([], [], error="AccessDenied"), timedelta(seconds=1))


def test_tags_are_read_from_an_authorization_details_page() -> None:
    page = (
        b'<GetAccountAuthorizationDetailsResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
        b"<GetAccountAuthorizationDetailsResult><UserDetailList>"
        b"<member><Path>/</Path><UserName>alice</UserName><GroupList><member>admins</member></GroupList>"
        b"<Tags><member><Key>keyrotor:exempt</Key><Value>a &amp; b &lt;c&gt;</Value></member>"
        b"<member><Key>empty</Key><Value/></member></Tags></member>"
        b"<member><UserName>bob</UserName><UserPolicyList><member><PolicyName>p</PolicyName></member>"
        b"</UserPolicyList></member>"
        b"</UserDetailList><IsTruncated>true</IsTruncated><Marker>abc</Marker></GetAccountAuthorizationDetailsResult>"
        b"</GetAccountAuthorizationDetailsResponse>"
    )
    assert _names_and_tags(page) == {"alice": {"keyrotor:exempt": "a & b <c>", "empty": ""}}


@pytest.mark.parametrize(
    ("page", "tags"),
    [
        (b"<R><GetAccountAuthorizationDetailsResult><UserDetailList/></GetAccountAuthorizationDetailsResult></R>", {}),
        (b"<R><UserDetailList><member><UserName>a</UserName></member></UserDetailList></R>", {}),
    ],
)
def test_pages_without_tagged_users(page: bytes, tags: dict[str, dict[str, str]]) -> None:
    assert _names_and_tags(page) == tags


@pytest.mark.parametrize(
    "page",
    [
        b"<R><UserDetailList><member><UserName>a</UserName><Tags><member><Key>k</Key>",
        b"<R><UserDetailList><member><UserName>a</UserName><Tags></Tags></UserDetailList></R>",
        b"<R><UserDetailList></member><member><Tags></Tags></member></UserDetailList></R>",
    ],
)
def test_malformed_pages_are_aws_errors(page: bytes) -> None:
    with pytest.raises(AwsError, match="GetAccountAuthorizationDetails"):
        _names_and_tags(page)
