"""Benchmark ``keyrotor audit --organization``: is auditing 10 accounts of 1,000 users about as fast as one account
of 10,000?

Starts a moto-only local stack on free ports, creates an organization with ``--accounts`` member accounts (default
10) of ``--users`` users each (default 1,000, cycling through the cases of bench/audit.py), and, outside the
organization, one account of accounts x users users. It then measures in the same run, interleaved, ``--runs``
times each, the whole process of:

* (s) ``keyrotor audit --account <the big account> --json`` (a single-account audit, through AssumeRole as well);
* (o) ``keyrotor audit --organization --json`` (the management account, empty, and every member account).

Target: (o) <= 1.5 x (s), on the best run of each (medians printed too). The findings of both must equal the
seeded truth, account by account. Exits 1 when the target is missed or the findings differ.

Run it with ``.venv/bin/python bench/audit_organization.py [--accounts 10] [--users 1000] [--runs 5]``.
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
from pathlib import Path
from typing import Any

import boto3

from keyrotor.stack.seed import SeedUser, seed_users
from keyrotor.stack.services import LocalStack, StackPorts

sys.path.insert(0, str(Path(__file__).parent))
from audit import CASES, EXEMPT_GLOB  # noqa: E402 - the cases of the single-account benchmark

RATIO_TARGET = 1.5
BIG_ACCOUNT = "999999999999"  # not in the organization


def seed_account(endpoint: str, account: str, count: int) -> set[tuple[str, str, str, str]]:
    """Seed ``count`` users in ``account``; the findings the audit must report there."""
    users, truth = [], set()
    for index in range(count):
        case = CASES[index % len(CASES)]
        name = f"{case.prefix}-{index:05d}"
        users.append(SeedUser(name, case.keys, dict(case.tags)))
        if not case.exempt:
            truth.update((account, name, rule, slot) for rule, slot in case.findings)
    seed_users(endpoint, users, account_id=account)
    return truth


def audit(env: dict[str, str], *args: str) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "keyrotor", "audit", "--json", "--exempt-user", EXEMPT_GLOB, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if not done.stdout:
        raise RuntimeError(f"keyrotor audit printed nothing (exit {done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done.returncode, json.loads(done.stdout)


def found(output: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(f["account_id"], f["user"], f["rule"], f["slot"]) for f in output["findings"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--users", type=int, default=1000, help="users per member account")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="keyrotor-org-bench-") as folder,
        LocalStack.start(Path(folder), StackPorts(0, 0, 0), services=("moto",)) as stack,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYROTOR_"))} | stack.env
        endpoint = env["AWS_ENDPOINT_URL"]
        orgs = boto3.client(
            "organizations",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        orgs.create_organization(FeatureSet="ALL")
        members = [
            orgs.create_account(AccountName=f"member-{i}", Email=f"m{i}@example.com")["CreateAccountStatus"][
                "AccountId"
            ]
            for i in range(args.accounts)
        ]
        started = time.perf_counter()
        org_truth: set[tuple[str, str, str, str]] = set()
        for account in members:
            org_truth |= seed_account(endpoint, account, args.users)
        big_truth = seed_account(endpoint, BIG_ACCOUNT, args.accounts * args.users)
        print(
            f"seeded {args.accounts} member accounts x {args.users} users and one account of "
            f"{args.accounts * args.users} users in {time.perf_counter() - started:.1f} s"
        )
        # The first audit of an account makes IAM generate its report; every measurement then reads it.
        audit(env, "--organization")
        audit(env, "--account", BIG_ACCOUNT)
        single, organization = [], []
        for _ in range(args.runs):
            seconds, single_status, single_out = audit(env, "--account", BIG_ACCOUNT)
            single.append(seconds)
            seconds, org_status, org_out = audit(env, "--organization")
            organization.append(seconds)
    ratio = min(organization) / min(single)
    exact_single = found(single_out) == big_truth and single_out["not_audited"] == []
    exact_org = found(org_out) == org_truth and org_out["not_audited"] == []
    audited = {a["account_id"] for a in org_out["accounts"]}
    print(
        f"(s) single account of {args.accounts * args.users} users: best {min(single):.2f} s, "
        f"median {statistics.median(single):.2f} s (runs {', '.join(f'{t:.2f}' for t in single)})"
    )
    print(
        f"(o) organization, {len(audited)} accounts: best {min(organization):.2f} s, "
        f"median {statistics.median(organization):.2f} s (runs {', '.join(f'{t:.2f}' for t in organization)})"
    )
    print(
        f"(o)/(s) = {ratio:.2f} (target <= {RATIO_TARGET}; medians "
        f"{statistics.median(organization) / statistics.median(single):.2f})"
    )
    print(
        f"(s) {len(found(single_out))} findings: {'exactly the seeded truth' if exact_single else 'DIFFERENT'}; "
        f"(o) {len(found(org_out))} findings in {len(audited)} accounts: "
        f"{'exactly the seeded truth' if exact_org else 'DIFFERENT'}; exit statuses {single_status}, {org_status}"
    )
    ok = exact_single and exact_org and ratio <= RATIO_TARGET and set(members) <= audited
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
