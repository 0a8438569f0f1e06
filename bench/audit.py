"""Benchmark ``keyrotor audit`` on a seeded account: is auditing barely more than reading one credential report?

Starts a moto-only local stack on free ports, seeds N users (default 10,000) cycling through every case the rules
know (no keys, fresh keys, old keys, never-used keys, idle keys, inactive keys, two active keys, exempt by tag or
by name, a ``false`` exempt tag), and measures in the same run, interleaved, several times each:

* (a) fetching and parsing one credential report (generate, poll, get, parse);
* (b) the whole audit in-process (report and tags, rules, exemptions);
* (c) the whole ``keyrotor audit --json`` process, as a user runs it (wall time).

Targets: (b)/(a) <= 2.0 and (c) <= 3 s, judged on the best run of each (as ``timeit`` does: on a shared machine
noise only ever adds time); the medians are printed too. The findings and exemptions of (b) and (c) must equal the
truth written down per case below. Exits 1 when a target is missed or the findings differ.

Run it with ``.venv/bin/python bench/audit.py [--users N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from keyrotor.adapters.credential_report import audit_account, fetch_credential_report
from keyrotor.audit.cis import AuditPolicy
from keyrotor.audit.findings import AuditResult
from keyrotor.stack.seed import SeedKey, SeedUser, seed_users
from keyrotor.stack.services import LocalStack, StackPorts

RATIO_TARGET = 2.0
PROCESS_TARGET_SECONDS = 3.0
EXEMPT_GLOB = "svc-exempt-*"
EXEMPT_TAG = "keyrotor:exempt"
NOW = datetime.now(UTC)

TOO_OLD, UNUSED, MULTIPLE = "key-too-old", "key-unused", "multiple-active-keys"
SLOT_1, SLOT_2 = "access_key_1", "access_key_2"


def days_ago(days: int) -> datetime:
    """A time ``days`` days before the benchmark started."""
    return NOW - timedelta(days=days)


@dataclass(frozen=True)
class Case:
    """One kind of seeded user and what the audit must say about it.

    Attributes:
        prefix: Name prefix of the users of this case.
        keys: Their keys.
        findings: The ``(rule, slot)`` findings expected, for a user that is not exempt.
        tags: Their tags.
        exempt: Whether the audit must list them as exempt.
    """

    prefix: str
    keys: tuple[SeedKey, ...] = ()
    findings: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    exempt: bool = False


CASES = (
    Case("no-keys"),
    Case("fresh", (SeedKey(days_ago(10), days_ago(1)),)),
    Case("fresh-never-used", (SeedKey(days_ago(10)),)),
    Case("old", (SeedKey(days_ago(200), days_ago(2)),), ((TOO_OLD, SLOT_1),)),
    Case("old-never-used", (SeedKey(days_ago(120)),), ((TOO_OLD, SLOT_1), (UNUSED, SLOT_1))),
    Case("never-used", (SeedKey(days_ago(60)),), ((UNUSED, SLOT_1),)),
    Case("idle", (SeedKey(days_ago(80), days_ago(50)),), ((UNUSED, SLOT_1),)),
    Case("inactive-and-fresh", (SeedKey(days_ago(300), active=False), SeedKey(days_ago(5), days_ago(1)))),
    Case("inactive-only", (SeedKey(days_ago(200), days_ago(150), active=False),)),
    Case(
        "two-active",
        (SeedKey(days_ago(20), days_ago(1)), SeedKey(days_ago(5), days_ago(1))),
        ((MULTIPLE, SLOT_1), (MULTIPLE, SLOT_2)),
    ),
    Case(
        "two-active-one-old",
        (SeedKey(days_ago(200), days_ago(1)), SeedKey(days_ago(5), days_ago(1))),
        ((MULTIPLE, SLOT_1), (TOO_OLD, SLOT_1), (MULTIPLE, SLOT_2)),
    ),
    Case("tagged-exempt", (SeedKey(days_ago(300)),), tags=((EXEMPT_TAG, "break-glass"),), exempt=True),
    Case(
        "tagged-not-exempt",
        (SeedKey(days_ago(100), days_ago(1)),),
        ((TOO_OLD, SLOT_1),),
        tags=((EXEMPT_TAG, "false"), ("team", "payments")),
    ),
    Case("svc-exempt", (SeedKey(days_ago(400)),), exempt=True),
)


@dataclass(frozen=True)
class Truth:
    """What the audit must report for the seeded account."""

    findings: frozenset[tuple[str, str, str]]
    exempt: frozenset[str]
    users: int


def seed(endpoint_url: str, count: int) -> Truth:
    """Create ``count`` users cycling through :data:`CASES`; return what the audit must find."""
    users: list[SeedUser] = []
    findings: set[tuple[str, str, str]] = set()
    exempt: set[str] = set()
    for index in range(count):
        case = CASES[index % len(CASES)]
        name = f"{case.prefix}-{index:05d}"
        users.append(SeedUser(name, case.keys, dict(case.tags)))
        if case.exempt:
            exempt.add(name)
        else:
            findings.update((name, rule, slot) for rule, slot in case.findings)
    seed_users(endpoint_url, users)
    return Truth(frozenset(findings), frozenset(exempt), count)


@dataclass
class Timing:
    """Wall times of one measured action, and its last result."""

    label: str
    times: list[float] = field(default_factory=list)
    result: Any = None

    def run(self, action: Callable[[], Any]) -> None:
        """Time one run of ``action``."""
        started = time.perf_counter()
        self.result = action()
        self.times.append(time.perf_counter() - started)

    @property
    def best(self) -> float:
        return min(self.times)

    def line(self) -> str:
        runs = ", ".join(f"{t:.3f}" for t in self.times)
        return f"{self.label:<52} best {self.best:.3f} s, median {statistics.median(self.times):.3f} s (runs {runs})"


def check(label: str, findings: set[tuple[str, str, str]], exempt: set[str], users: int, truth: Truth) -> bool:
    """Compare one audit's output with the truth; print what differs."""
    ok = findings == truth.findings and exempt == truth.exempt and users == truth.users
    print(
        f"{label}: {len(findings)} findings, {len(exempt)} exempt, {users} users: "
        f"{'exactly the seeded truth' if ok else 'DIFFERENT from the seeded truth'}"
    )
    if not ok:
        print(f"  missing findings: {sorted(truth.findings - findings)[:5]}")
        print(f"  unexpected findings: {sorted(findings - truth.findings)[:5]}")
        print(f"  exempt missing/unexpected: {sorted(truth.exempt - exempt)[:5]} {sorted(exempt - truth.exempt)[:5]}")
    return ok


def in_process(result: AuditResult) -> tuple[set[tuple[str, str, str]], set[str], int]:
    """Findings, exempt users and user count of an in-process audit."""
    return ({(f.user, f.rule.value, f.slot) for f in result.findings}, {e.user for e in result.exempt}, result.users)


def from_json(output: dict[str, Any]) -> tuple[set[tuple[str, str, str]], set[str], int]:
    """Findings, exempt users and user count of ``keyrotor audit --json``'s object."""
    findings = {(f["user"], f["rule"], f["slot"]) for f in output["findings"]}
    return findings, {e["user"] for e in output["exempt"]}, int(output["summary"]["users"])


def run_cli(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run ``keyrotor audit --json`` as a user would; its exit status and JSON object."""
    process = subprocess.run(
        [sys.executable, "-m", "keyrotor", "audit", "--json", "--exempt-user", EXEMPT_GLOB],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if not process.stdout:
        raise RuntimeError(f"keyrotor audit printed nothing (exit {process.returncode}): {process.stderr[-2000:]}")
    return process.returncode, json.loads(process.stdout)


def main(argv: list[str] | None = None) -> int:
    """Seed, measure, compare; 0 when the targets are met and the findings are exact."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=10_000, help="users to seed (default 10000)")
    parser.add_argument("--runs", type=int, default=7, help="runs of each measurement (default 7)")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="keyrotor-bench-") as folder,
        LocalStack.start(Path(folder), StackPorts(0, 0, 0), services=("moto",)) as stack,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYROTOR_"))} | stack.env
        started = time.perf_counter()
        truth = seed(env["AWS_ENDPOINT_URL"], args.users)
        print(f"seeded {args.users} users ({len(CASES)} cases) in {time.perf_counter() - started:.2f} s")
        iam = boto3.client(
            "iam",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        policy = AuditPolicy(exempt_tag=EXEMPT_TAG, exempt_users=(EXEMPT_GLOB,))
        fetch_credential_report(iam)  # IAM generates the report once; every measurement then reads it.

        report = Timing("(a) fetch + parse one credential report")
        audit = Timing("(b) full audit in-process")
        process = Timing("(c) `keyrotor audit --json` process, wall time")
        for _ in range(args.runs):
            report.run(lambda: fetch_credential_report(iam))
            audit.run(lambda: audit_account(iam, policy))
            process.run(lambda: run_cli(env))

        ratio = audit.best / report.best
        print(f"{len(report.result.rows)} report rows")
        for timing in (report, audit, process):
            print(timing.line())
        print(
            f"(b)/(a) = {ratio:.2f} (target <= {RATIO_TARGET}; medians: "
            f"{statistics.median(audit.times) / statistics.median(report.times):.2f}); "
            f"(c) = {process.best:.2f} s (target <= {PROCESS_TARGET_SECONDS} s)"
        )
        status, output = process.result
        exact = check("(b) in-process", *in_process(audit.result), truth) & check(
            "(c) --json", *from_json(output), truth
        )
        print(f"(c) exit status {status} (10: findings exist)")
    ok = exact and status == 10 and ratio <= RATIO_TARGET and process.best <= PROCESS_TARGET_SECONDS
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
