from __future__ import annotations

from datetime import timedelta

from keyrotor.core.timestamps import parse_vault_time


def test_vault_time_with_nanoseconds() -> None:
    parsed = parse_vault_time("2026-11-22T10:00:00.123456789Z")
    assert parsed.microsecond == 123456 and parsed.utcoffset() == timedelta(0)
