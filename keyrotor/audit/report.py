"""IAM's credential report (CSV) parsed into rows of key slots. Pure: the report is fetched by
:mod:`keyrotor.adapters.credential_report`.

The ``<root_account>`` row is not an IAM user; keyrotor never rotates root keys, it only counts them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from keyrotor.core.errors import AwsError
from keyrotor.core.timestamps import as_utc

ROOT_ACCOUNT = "<root_account>"


SLOTS = ("access_key_1", "access_key_2")


# Values the credential report writes where a date or name is absent.
_ABSENT = frozenset({"", "N/A", "not_supported", "no_information"})


_KEY_FIELDS = ("active", "last_rotated", "last_used_date", "last_used_region", "last_used_service")


_REQUIRED_COLUMNS = ("user", "arn", *(f"{slot}_{name}" for slot in SLOTS for name in _KEY_FIELDS))


@dataclass(frozen=True)
class KeySlot:
    """One of a user's two access-key columns in the credential report (which has no key ids).

    Attributes:
        slot: ``access_key_1`` or ``access_key_2``.
        active: Whether the key is Active; an empty slot reads as inactive.
        last_rotated: When the key was created; None for an empty slot.
        last_used: When the key last signed a request; None when never used.
        last_used_service: The service of that request, when known.
        last_used_region: The region of that request, when known.
    """

    slot: str
    active: bool
    last_rotated: datetime | None
    last_used: datetime | None = None
    last_used_service: str | None = None
    last_used_region: str | None = None


# The slots of users with fewer than two keys, shared: most of a report's slots are empty.
_EMPTY_SLOTS = {slot: KeySlot(slot, active=False, last_rotated=None) for slot in SLOTS}


@dataclass(frozen=True)
class ReportRow:
    """One line of the credential report.

    Attributes:
        user: The IAM user name, or ``<root_account>``.
        arn: The user's ARN (it includes the user's path).
        keys: The two key slots.
    """

    user: str
    arn: str
    keys: tuple[KeySlot, ...]

    @property
    def is_root(self) -> bool:
        """Whether this is the account's root user, which is not an IAM user."""
        return self.user == ROOT_ACCOUNT

    @property
    def active_keys(self) -> tuple[KeySlot, ...]:
        """The slots holding an Active key."""
        return tuple(key for key in self.keys if key.active)


@dataclass(frozen=True)
class CredentialReport:
    """The parsed credential report.

    Attributes:
        generated_at: When AWS generated it (it regenerates at most every 4 hours).
        rows: Every line, the root account's included.
    """

    generated_at: datetime
    rows: tuple[ReportRow, ...]

    @property
    def users(self) -> tuple[ReportRow, ...]:
        """The IAM users' lines (without the root account's)."""
        return tuple(row for row in self.rows if not row.is_root)

    @property
    def root(self) -> ReportRow | None:
        """The root account's line, when the report has one."""
        return next((row for row in self.rows if row.is_root), None)


def parse_report(content: bytes | str, generated_at: datetime) -> CredentialReport:
    """Parse the credential report's CSV.

    Args:
        content: The report as ``GetCredentialReport`` returns it (boto3 has already base64-decoded it).
        generated_at: The report's ``GeneratedTime``.

    Returns:
        The report, row by row.

    Raises:
        AwsError: The document is not a credential report (a column is missing or a date does not parse).
    """
    text = content.decode() if isinstance(content, bytes) else content
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    missing = [name for name in _REQUIRED_COLUMNS if name not in header]
    if missing:
        raise AwsError(f"the credential report lacks the columns {', '.join(missing)}")
    user, arn = header.index("user"), header.index("arn")
    slots = [_SlotColumns.find(header, slot) for slot in SLOTS]
    rows: list[ReportRow] = []
    for values in reader:
        if values:
            values += [""] * (len(header) - len(values))
            rows.append(ReportRow(values[user], values[arn], tuple(_key_slot(values, slot) for slot in slots)))
    return CredentialReport(generated_at=as_utc(generated_at), rows=tuple(rows))


@dataclass(frozen=True)
class _SlotColumns:
    """Where one key slot's fields are in the report's lines."""

    slot: str
    active: int
    rotated: int
    used: int
    region: int
    service: int

    @classmethod
    def find(cls, header: list[str], slot: str) -> _SlotColumns:
        def at(name: str) -> int:
            return header.index(f"{slot}_{name}")

        return cls(
            slot,
            at("active"),
            at("last_rotated"),
            at("last_used_date"),
            at("last_used_region"),
            at("last_used_service"),
        )


def _key_slot(values: list[str], columns: _SlotColumns) -> KeySlot:
    """One key slot of a CSV line."""
    active = values[columns.active] == "true"
    if not active and values[columns.rotated] in _ABSENT:
        return _EMPTY_SLOTS[columns.slot]
    return KeySlot(
        columns.slot,
        active,
        _time(values[columns.rotated]),
        _time(values[columns.used]),
        _text(values[columns.service]),
        _text(values[columns.region]),
    )


def _time(value: str) -> datetime | None:
    """A report date, or None for ``N/A`` and its kin; dates without an offset are UTC."""
    if value in _ABSENT:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise AwsError(f"the credential report has an unreadable date {value!r}") from None
    return as_utc(parsed)


def _text(value: str) -> str | None:
    return None if value in _ABSENT else value
