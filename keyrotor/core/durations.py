"""Durations as people write them: ``90s``, ``15m``, ``24h``, ``7d`` (and combinations like ``1h30m``).

:data:`Duration` is the one typed form every layer uses: a ``timedelta`` in Python, the text people type in a
command line, a Prefect form or JSON. Only ASCII digits count: ``float()`` and ``\\d`` would take Arabic-Indic digits,
``inf`` or ``nan`` for numbers.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)")
_BARE = re.compile(_NUMBER)
#: What a Prefect form (and the server, before it creates a run) accepts: the same forms as :func:`parse_duration`.
PATTERN = rf"^\s*(?:{_NUMBER}|(?:{_NUMBER}\s*(?:ms|s|m|h|d|w)\s*)+)$"
HINT = "a number with a unit: 90s, 15m, 24h, 7d, 1h30m (a bare number is seconds)"


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse a duration such as ``90s``, ``15m``, ``24h``, ``7d`` or ``1h30m``.

    A bare number is taken as seconds. Raises ``ValueError`` with a message that shows the accepted forms.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise ValueError(f"invalid duration {value!r}: use {HINT}")
    elif isinstance(value, str):
        seconds = _parse_text(value.strip().lower().replace(" ", ""), original=value)
    else:
        raise ValueError(f"invalid duration {value!r}: use {HINT}")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    if seconds > timedelta.max.total_seconds() / 2:
        raise ValueError(f"duration {value!r} is longer than any wait keyrotor can schedule")
    return timedelta(seconds=seconds)


def _parse_text(text: str, original: str) -> float:
    if text.startswith("-"):
        raise ValueError(f"duration {original!r} is negative")
    if _BARE.fullmatch(text):
        return float(text)
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"invalid duration {original!r}: use {HINT}")
    return total


def format_duration(value: timedelta | float) -> str:
    """Format a duration compactly and exactly (``1d2h``; 90 s shows as ``1m30s``, 1.5 s as ``1.5s``)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{seconds:g}s"
    whole, fraction = divmod(seconds, 1)
    remaining = int(whole)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = round(remaining + fraction, 3)
    if rest:
        parts.append(f"{rest:g}s")
    return "".join(parts)


#: A duration: ``timedelta`` in Python, its text (``1d``) in JSON, Vault records and Prefect's run forms.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": PATTERN}),
]
