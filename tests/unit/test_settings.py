"""Durations and settings: what users type, and the errors they get for bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyrotor.core.timings import Timings
from keyrotor.settings import Settings


def test_defaults_fit_real_aws() -> None:
    timings = Timings()
    assert timings.quiet_period >= timedelta(days=1) and timings.grace_period >= timedelta(days=1)


def test_max_wait_shorter_than_quiet_period_is_refused() -> None:
    with pytest.raises(ValueError, match="max wait"):
        Timings.model_validate({"quiet_period": "2h", "max_wait": "1h"})  # the text form, as from the environment


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYROTOR_QUIET_PERIOD", "3s")
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    monkeypatch.setenv("VAULT_TOKEN", "t0ken")
    settings = Settings()
    assert settings.timings.quiet_period == timedelta(seconds=3)
    assert settings.vault_addr == "http://127.0.0.1:1"
    assert settings.token() == "t0ken"
    assert "t0ken" not in repr(settings)
