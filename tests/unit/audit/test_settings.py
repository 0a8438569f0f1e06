from __future__ import annotations

from typing import Any

import pytest

from keyrotor.audit.settings import AuditSettings
from keyrotor.core.errors import ConfigurationError


def test_settings_defaults_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = AuditSettings.load().policy()
    assert (defaults.max_key_age_days, defaults.unused_days, defaults.exempt_tag) == (90, 45, "keyrotor:exempt")
    monkeypatch.setenv("KEYROTOR_AUDIT_EXEMPT_USERS", "svc-*, ci-*")
    monkeypatch.setenv("KEYROTOR_AUDIT_MAX_KEY_AGE_DAYS", "120")
    assert AuditSettings.load().policy().exempt_users == ("svc-*", "ci-*")
    overridden = AuditSettings.load(max_key_age_days=30, exempt_users=["x-*"]).policy(["team-*"])
    assert (overridden.max_key_age_days, overridden.exempt_users, overridden.only_users) == (30, ("x-*",), ("team-*",))


@pytest.mark.parametrize(
    "overrides",
    [{"max_key_age_days": 0}, {"unused_days": -1}, {"report_timeout": "soon"}],
)
def test_bad_settings_are_configuration_errors(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="invalid audit settings") as raised:
        AuditSettings.load(**overrides)
    assert raised.value.exit_code == 2
