"""Benchmark fleet remediation: ``keyrotor remediate`` against a baseline making the same calls directly.

Starts a local stack (moto, OpenBao, Prefect server on PostgreSQL) on free ports and seeds two equal populations of users, each
with one 120-day-old key. With zero waiting times (quiet period and grace period 0s) it then runs, side by side
in the same run and each in its own process:

* baseline: ``bench/remediate.py --baseline``: the audit, the plan and every rotation step (the same IAM, STS and
  Vault calls, the same lease and state records) called directly, with a thread pool of the same size;
* keyrotor: ``keyrotor remediate --json``: the ``audit-and-remediate`` flow, one flow run per user.

It prints wall time, the ratio keyrotor/baseline (target <= 3.0) and each process's peak RSS, for every size
given (default 100 and 1000 users; --rounds repeats each size). Both must end with every user rotated.

Run it with ``.venv/bin/python bench/remediate.py [--users 100 1000] [--concurrency 4] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ZERO = {
    "KEYROTOR_QUIET_PERIOD": "0s",
    "KEYROTOR_POLL_INTERVAL": "0.1s",
    "KEYROTOR_GRACE_PERIOD": "0s",
    "KEYROTOR_MAX_WAIT": "60s",
    "KEYROTOR_LEASE_TTL": "30s",
    "KEYROTOR_ACCEPT_UNSAFE_QUIET_PERIOD": "true",  # zero waits on purpose: the benchmark measures the work
}


def baseline(prefix: str, concurrency: int) -> int:
    """The same calls as a remediation, made directly: audit, plan, then each rotation's steps in a thread pool."""
    from prefect.logging import disable_run_logger

    from keyrotor.adapters.connections import Connections, whoami
    from keyrotor.adapters.credential_report import run_audit
    from keyrotor.audit.settings import AuditSettings
    from keyrotor.core.inputs import RotationRequest
    from keyrotor.remediation.survey import plan_fleet
    from keyrotor.settings import Settings
    from keyrotor.tasks.context import RotationContext
    from keyrotor.tasks.keys import create_new_key, deactivate_old_key, delete_deactivated_key, verify_new_key
    from keyrotor.tasks.lease import rotation_lease
    from keyrotor.tasks.preflight import start_rotation
    from keyrotor.tasks.vault import publish_new_key
    from keyrotor.tasks.wait import Watch, look_at

    settings = Settings()
    audit_settings = AuditSettings.load()
    connections = Connections.from_settings(settings)
    result = run_audit(audit_settings, [f"{prefix}*"])
    plans = plan_fleet(connections, result, audit_settings, concurrency)

    def rotate(user: str) -> str:
        connections.kv.check()  # the preflight's calls
        connections.iam.ensure_user(user)
        ctx = RotationContext(
            user,
            connections.account_id,
            connections.iam,
            connections.records(user),
            connections.waiting,
            settings,
            whoami(),
        )
        timings = RotationRequest.timing_values(settings.timings, accept_unsafe_quiet_period=True)
        request = RotationRequest(user_name=user, **timings)
        with rotation_lease(ctx) as leased:
            state = start_rotation.fn(leased, request)
            state = publish_new_key.fn(leased, verify_new_key.fn(leased, create_new_key.fn(leased, state)))
            look_at(leased, state, Watch.old_key(state))  # the one look a zero quiet period needs
            state = delete_deactivated_key.fn(leased, deactivate_old_key.fn(leased, state))
        return state.phase.value

    with disable_run_logger(), ThreadPoolExecutor(max_workers=concurrency) as pool:
        phases = list(pool.map(rotate, [plan.user for plan in plans]))
    return sum(phase == "completed" for phase in phases)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds and peak RSS (MiB) of one child process (its own, from wait4, not the most of all children)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
    return elapsed, usage.ru_maxrss / 1024, done


def seed(endpoint: str, prefix: str, count: int) -> None:
    from keyrotor.stack.seed import SeedKey, SeedUser, seed_users

    now = datetime.now(UTC)
    old = SeedKey(created=now - timedelta(days=120), last_used=now - timedelta(days=2))
    seed_users(endpoint, [SeedUser(f"{prefix}{i:05d}", (old,)) for i in range(count)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--concurrency", type=int, default=4, help="Users at once, both sides (keyrotor's default).")
    parser.add_argument("--rounds", type=int, default=1, help="Side-by-side rounds per size (fresh users each).")
    parser.add_argument("--baseline", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        print(json.dumps({"completed": baseline(args.baseline, args.concurrency)}))
        return 0

    from keyrotor.stack.services import LocalStack, StackPorts

    failed = False
    with tempfile.TemporaryDirectory(prefix="keyrotor-bench-") as folder:
        stack = LocalStack.start(Path(folder) / "stack", StackPorts(0, 0, 0))
        try:
            env = {
                **os.environ,
                **stack.env,
                **ZERO,
                "PREFECT_HOME": str(Path(folder) / "client"),
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            print(
                f"{'users':>6} {'baseline s':>11} {'keyrotor s':>11} {'ratio':>6} {'baseline MiB':>13} "
                f"{'keyrotor MiB':>13}"
            )
            for count, round_ in ((count, r) for count in args.users for r in range(args.rounds)):
                base_prefix, kr_prefix = f"b{count}r{round_}-", f"k{count}r{round_}-"
                seed(stack.env["AWS_ENDPOINT_URL"], base_prefix, count)
                seed(stack.env["AWS_ENDPOINT_URL"], kr_prefix, count)
                base_s, base_mib, base = timed(
                    [sys.executable, __file__, "--baseline", base_prefix, "--concurrency", str(args.concurrency)], env
                )
                kr_s, kr_mib, kr = timed(
                    [
                        sys.executable,
                        "-m",
                        "keyrotor",
                        "remediate",
                        "--json",
                        "--user",
                        f"{kr_prefix}*",
                        "--max-concurrency",
                        str(args.concurrency),
                    ],
                    env,
                )
                base_done = json.loads(base.stdout)["completed"] if base.returncode == 0 else -1
                outcomes: list[dict[str, Any]] = json.loads(kr.stdout)["outcomes"] if kr.returncode == 0 else []
                kr_done = sum(o["outcome"] == "completed" for o in outcomes)
                ratio = kr_s / base_s
                print(
                    f"{count:>6} {base_s:>11.1f} {kr_s:>11.1f} {ratio:>6.2f} {base_mib:>13.0f} {kr_mib:>13.0f}"
                    f"   rotated: baseline {base_done}/{count}, keyrotor {kr_done}/{count}"
                )
                if base_done != count or kr_done != count:
                    print(base.stderr[-2000:], kr.stderr[-2000:], file=sys.stderr)
                    failed = True
                failed |= ratio > 3.0
        finally:
            stack.stop(purge=True)
    print("target: keyrotor within 3.0x of the baseline: " + ("MISSED" if failed else "met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
