"""Operator input: every request is typed and checked once, and nothing slips past the checks (ASCII only, as AWS
defines names and ids; durations as people write them), whichever way it arrives (a flag, a form, JSON)."""

from __future__ import annotations

import json
import re
import string
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrotor.core.durations import PATTERN as DURATION_PATTERN
from keyrotor.core.durations import format_duration, parse_duration
from keyrotor.core.errors import ConfigurationError
from keyrotor.core.inputs import (
    ACCOUNT_ID_PATTERN,
    USER_NAME_PATTERN,
    Origin,
    RetirementRequest,
    RollbackRequest,
    RotationRequest,
    check_account_id,
    check_quiet_period,
    check_user_name,
)

IAM_CHARACTERS = string.ascii_letters + string.digits + "+=,.@_-"


@pytest.mark.parametrize("name", ["", " ", "a" * 65, "bad/name", "tab\tname", "ünïcode", "alice\n", " alice"])
def test_impossible_user_names_are_bad_input(name: str) -> None:
    with pytest.raises(ConfigurationError, match="not a valid IAM user name"):
        check_user_name(name)


@pytest.mark.parametrize("name", ["alice", "svc+ci=1,a.b@c_d-e", "a" * 64, "A"])
def test_possible_user_names_pass(name: str) -> None:
    assert check_user_name(name) == name


@pytest.mark.parametrize(
    "value",
    ["١٢٣٤٥٦٧٨٩٠١٢", "１２３４５６７８９０１２", " 111122223333", "111122223333 ", "11112222333", "1111222233334", "x"],
)
def test_account_ids_are_twelve_ascii_digits_and_nothing_around_them(value: str) -> None:
    """Arabic-Indic or full-width digits match ``\\d``; spaces are not stripped here and used unstripped there."""
    with pytest.raises(ConfigurationError, match="not an AWS account id"):
        check_account_id(value)


@pytest.mark.parametrize("value", ["١٢s", "nan", "inf", "-inf", "1e3", "５m", float("nan"), float("inf")])
def test_durations_take_ascii_numbers_only(value: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize("seconds", [0.5, 1, 1.5, 59, 60, 90, 90.5, 3600, 86400, 93784.25, 604800])
def test_durations_read_back_as_written(seconds: float) -> None:
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


def test_a_request_from_a_form_names_its_fields_and_from_the_cli_its_flags() -> None:
    values = {"user_name": "alice", "quiet_period": "2h", "max_wait": "1h"}
    with pytest.raises(ConfigurationError, match="max wait .1h. is shorter than the quiet period .2h."):
        RotationRequest.parse(values, Origin.FORM)
    with pytest.raises(ConfigurationError, match=r"^quiet-period: invalid duration"):
        RotationRequest.parse({"user_name": "alice", "quiet_period": "soon"}, Origin.CLI)
    with pytest.raises(ConfigurationError, match=r"^quiet_period: invalid duration"):
        RotationRequest.parse({"user_name": "alice", "quiet_period": "soon"}, Origin.FORM)


def test_a_misspelt_field_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigurationError, match="quiet_periode"):
        RotationRequest.parse({"user_name": "alice", "quiet_periode": "1h"})


def test_the_form_shows_the_real_defaults_as_text_and_no_none_toggles() -> None:
    """What Prefect renders as the run form: each duration a string with its default (1d, 15m, 7d, 7d) and the
    pattern the server checks before it creates a run; no field is ``x | None``."""
    schema = RotationRequest.model_json_schema()
    fields = schema["properties"]
    assert {
        name: fields[name]["default"] for name in ("quiet_period", "poll_interval", "max_wait", "grace_period")
    } == {
        "quiet_period": "1d",
        "poll_interval": "15m",
        "max_wait": "7d",
        "grace_period": "7d",
    }
    assert fields["quiet_period"]["type"] == "string" and fields["quiet_period"]["pattern"] == DURATION_PATTERN
    assert fields["user_name"]["pattern"] == USER_NAME_PATTERN and schema["required"] == ["user_name"]
    assert ACCOUNT_ID_PATTERN.strip("^$") in fields["account_id"]["pattern"]
    assert "anyOf" not in json.dumps(schema), "no None toggles in the form"
    assert "90s, 15m, 24h, 7d" in fields["quiet_period"]["description"]


def test_a_request_survives_its_json_form_unchanged() -> None:
    request = RotationRequest.parse({"user_name": "alice", "account_id": "111122223333", "quiet_period": "90s"})
    again = RotationRequest.parse(json.loads(json.dumps(request.model_dump(mode="json"))))
    assert again == request and again.quiet_period == timedelta(seconds=90) and again.account == "111122223333"


def test_a_retirement_names_a_key_like_iam_issues_them() -> None:
    base: dict[str, Any] = {"user_name": "alice", "key_id": "AKIAABCDEFGHIJKLMNOP"}
    assert RetirementRequest.parse(base).keep_key_id == ""
    with pytest.raises(ConfigurationError, match="not an access key id"):
        RetirementRequest.parse(base | {"key_id": "akia-lower"})


def test_rollback_defaults_to_waiting_for_the_new_key() -> None:
    assert RollbackRequest.parse({"user_name": "alice"}).now is False


@pytest.mark.parametrize(
    ("quiet", "real_aws", "accepted", "refused"),
    [
        (timedelta(0), False, False, "0s would deactivate"),
        (timedelta(0), True, False, "0s would deactivate"),
        (timedelta(0), False, True, None),
        (timedelta(seconds=2), False, False, None),  # a local endpoint records last use at once
        (timedelta(hours=1), True, False, "shorter than the 4h"),
        (timedelta(hours=1), True, True, None),
        (timedelta(hours=4), True, False, None),
        (timedelta(days=1), True, False, None),
    ],
)
def test_quiet_periods_that_cannot_be_safe_are_refused(
    quiet: timedelta, real_aws: bool, accepted: bool, refused: str | None
) -> None:
    for origin, how in (
        (Origin.CLI, "--accept-unsafe-quiet-period"),
        (Origin.FORM, "accept_unsafe_quiet_period in the form"),
    ):
        if refused is None:
            check_quiet_period(quiet, real_aws=real_aws, accepted=accepted, origin=origin)
            continue
        with pytest.raises(ConfigurationError, match=refused) as error:
            check_quiet_period(quiet, real_aws=real_aws, accepted=accepted, origin=origin)
        assert how in str(error.value)


# --- properties: whatever comes in, what passes is what AWS allows, and a refusal is always a ConfigurationError --


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
def test_any_user_name_passes_only_if_iam_could_have_it(name: str) -> None:
    allowed = 1 <= len(name) <= 64 and all(character in IAM_CHARACTERS for character in name)
    try:
        assert RotationRequest.parse({"user_name": name}).user_name == name
    except ConfigurationError:
        assert not allowed
    else:
        assert allowed


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=16), st.from_regex(r"\d{12}", fullmatch=True)))
def test_any_account_id_passes_only_if_it_is_twelve_ascii_digits(account: str) -> None:
    allowed = account == "" or re.fullmatch(r"[0-9]{12}", account, re.ASCII) is not None
    try:
        assert RotationRequest.parse({"user_name": "alice", "account_id": account}).account_id == account
    except ConfigurationError:
        assert not allowed
    else:
        assert allowed


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12), st.from_regex(r"[0-9]{1,4}(ms|s|m|h|d|w)", fullmatch=True)))
def test_any_duration_is_read_as_the_form_s_pattern_says_or_refused_cleanly(text: str) -> None:
    matches = re.fullmatch(DURATION_PATTERN.strip("^$"), text) is not None
    try:
        parse_duration(text)
    except ValueError:
        assert not matches or text.strip() == ""
    else:
        assert matches, f"{text!r} parsed but the form's pattern would refuse it"
