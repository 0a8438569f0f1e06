"""Durations and settings: what users type, and the errors they get for bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyrotor.core.durations import format_duration, parse_duration
from keyrotor.core.timestamps import parse_vault_time
from keyrotor.settings import Settings, Timings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("0s", 0),
        ("2", 2),
        ("1.5s", 1.5),
        (" 2w ", 1209600),
        ("500ms", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "10x", "5m3", "-5s", "m5"])
def test_bad_durations_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(days=1, hours=2)) == "1d2h"


def test_defaults_fit_real_aws() -> None:
    timings = Timings()
    assert timings.quiet_period >= timedelta(days=1) and timings.grace_period >= timedelta(days=1)


def test_max_wait_shorter_than_quiet_period_is_refused() -> None:
    with pytest.raises(ValueError, match="max-wait"):
        Timings().with_overrides(quiet_period="2h", max_wait="1h")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYROTOR_QUIET_PERIOD", "3s")
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    monkeypatch.setenv("VAULT_TOKEN", "t0ken")
    settings = Settings()
    assert settings.timings.quiet_period == timedelta(seconds=3)
    assert settings.vault_addr == "http://127.0.0.1:1"
    assert settings.token() == "t0ken"
    assert "t0ken" not in repr(settings)


def test_vault_time_with_nanoseconds() -> None:
    parsed = parse_vault_time("2026-11-22T10:00:00.123456789Z")
    assert parsed.microsecond == 123456 and parsed.utcoffset() == timedelta(0)
