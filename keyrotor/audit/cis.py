"""The rules of the audit and the CIS AWS Foundations Benchmark controls they come from.

The numbers are those of versions 1.4.0 to 3.0.0; the numbering moves between versions, so the title is cited too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Rule(StrEnum):
    """The rules an active access key is checked against."""

    MULTIPLE_ACTIVE_KEYS = "multiple-active-keys"
    KEY_TOO_OLD = "key-too-old"
    KEY_UNUSED = "key-unused"


@dataclass(frozen=True)
class CisReference:
    """A control of the CIS AWS Foundations Benchmark.

    Attributes:
        control: The control's number in ``versions``.
        versions: The benchmark versions that use this number.
        title: The control's title, which survives renumbering.
    """

    control: str
    versions: str
    title: str

    def __str__(self) -> str:
        return f"CIS AWS Foundations {self.versions} {self.control}"

    def to_json(self) -> dict[str, str]:
        """The reference as a JSON object."""
        return {
            "benchmark": "CIS AWS Foundations Benchmark",
            "versions": self.versions,
            "control": self.control,
            "title": self.title,
        }


_CIS_VERSIONS = "v1.4.0-v3.0.0"


CIS_REFERENCES: Mapping[Rule, tuple[CisReference, ...]] = {
    Rule.MULTIPLE_ACTIVE_KEYS: (
        CisReference(
            "1.13", _CIS_VERSIONS, "Ensure there is only one active access key available for any single IAM user"
        ),
    ),
    Rule.KEY_TOO_OLD: (CisReference("1.14", _CIS_VERSIONS, "Ensure access keys are rotated every 90 days or less"),),
    Rule.KEY_UNUSED: (
        CisReference("1.12", _CIS_VERSIONS, "Ensure credentials unused for 45 days or greater are disabled"),
    ),
}


@dataclass(frozen=True)
class AuditPolicy:
    """The thresholds, exemptions and scope of an audit.

    Attributes:
        max_key_age_days: An active key created more than this many days ago is too old.
        unused_days: An active key unused (or, never used, created) this many days ago or more is unused.
        exempt_tag: Users carrying this tag key are exempt, unless its value is ``false``; empty: no tag exempts.
        exempt_users: Users whose name matches one of these globs (case-insensitive) are exempt.
        only_users: When not empty, only users whose name matches one of these globs are audited.
    """

    max_key_age_days: int = 90
    unused_days: int = 45
    exempt_tag: str = "keyrotor:exempt"
    exempt_users: tuple[str, ...] = ()
    only_users: tuple[str, ...] = ()
