"""Timestamps as Vault writes them (RFC 3339 with up to nanoseconds)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRACTION = re.compile(r"\.(\d+)")


def parse_vault_time(value: str) -> datetime:
    """Parse ``2026-11-22T10:00:00.123456789Z``: Python keeps microseconds, so extra digits are dropped."""
    text = _FRACTION.sub(lambda match: "." + match.group(1)[:6].ljust(6, "0"), value.replace("Z", "+00:00"), count=1)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
