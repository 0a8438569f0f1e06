"""Time as keyrotor handles it: always timezone-aware UTC, written as ISO 8601, read back from Vault's RFC 3339."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRACTION = re.compile(r"\.(\d+)")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime (naive ones, as some reports and SDKs give, are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_or_none(value: datetime | None) -> str | None:
    """ISO 8601 for JSON and Vault records; None stays None."""
    return value.isoformat() if value is not None else None


def parse_vault_time(value: str) -> datetime:
    """Parse ``2026-11-22T10:00:00.123456789Z``: Python keeps microseconds, so extra digits are dropped."""
    text = _FRACTION.sub(lambda match: "." + match.group(1)[:6].ljust(6, "0"), value.replace("Z", "+00:00"), count=1)
    return as_utc(datetime.fromisoformat(text))
