"""Figures for "nothing lost, nothing broken, first time": rotations through a fault-injecting proxy.

Starts moto and OpenBao on free ports, puts a fault-injecting proxy (keyrotor.stack.faults) in front of each, and
rotates N users with ``keyrotor rotate --local`` through the proxies (C at a time, each in its own process, on
Prefect's temporary server), while one simulated application per user reads its key from Vault and calls AWS
directly, bypassing the proxies. With probability ``--rate`` each of keyrotor's requests is throttled, answered
with a 500 or 503, dropped, or forwarded and its answer lost after the change took effect.

It prints: rotations, how many converged on their first run, application calls and how many were refused, keys
whose secret nobody holds (orphans), unpublished secrets left in Vault, the faults injected by kind, and the wall
time; it exits 1 unless every rotation converged on its first run with no refused call and no orphan.

Run it with ``.venv/bin/python bench/faults.py [--users 20] [--concurrency 4] [--rate 0.3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.3, help="share of keyrotor's requests that meet a fault")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import boto3
    from pydantic import SecretStr

    from keyrotor.adapters.connections import Connections
    from keyrotor.core.model import NewCredentials
    from keyrotor.settings import Settings
    from keyrotor.stack.faults import FaultPlan, FaultProxy
    from keyrotor.stack.services import LocalStack, StackPorts
    from keyrotor.stack.simulated_apps import SimulatedApp

    with tempfile.TemporaryDirectory(prefix="keyrotor-faults-bench-") as folder:
        stack = LocalStack.start(Path(folder) / "stack", StackPorts(0, 0, 0), services=("moto", "vault"))
        try:
            os.environ.update(stack.env)
            connections = Connections.from_settings(Settings())
            iam = boto3.client("iam")
            users = [f"faults-{index:04d}" for index in range(args.users)]
            old = {}
            for user in users:
                iam.create_user(UserName=user)
                key = iam.create_access_key(UserName=user)["AccessKey"]
                old[user] = key["AccessKeyId"]
                credentials = NewCredentials(key["AccessKeyId"], SecretStr(key["SecretAccessKey"]))
                connections.records(user).publish(credentials, cas=0)
            apps = {user: SimulatedApp(user, connections.records(user), refresh=0.5, interval=0.5) for user in users}
            with (
                FaultProxy(stack.env["AWS_ENDPOINT_URL"], FaultPlan(rate=args.rate, seed=args.seed)) as iam_proxy,
                FaultProxy(
                    stack.env["VAULT_ADDR"], FaultPlan(rate=args.rate, seed=args.seed + 1), vault=True
                ) as vault_proxy,
            ):
                env = {
                    **os.environ,
                    "AWS_ENDPOINT_URL": iam_proxy.url,
                    "VAULT_ADDR": vault_proxy.url,
                    "PREFECT_HOME": str(Path(folder) / "prefect"),
                    "PREFECT_LOGGING_LEVEL": "WARNING",
                    "KEYROTOR_QUIET_PERIOD": "3s",
                    "KEYROTOR_POLL_INTERVAL": "1s",
                    "KEYROTOR_MAX_WAIT": "5m",
                    "KEYROTOR_GRACE_PERIOD": "0s",
                    "KEYROTOR_LEASE_TTL": "15s",
                    "KEYROTOR_AWS_MAX_ATTEMPTS": "3",
                    "KEYROTOR_AWS_RETRY_TIMEOUT": "2m",
                    "KEYROTOR_VAULT_RETRY_TIMEOUT": "2m",
                }
                env.pop("PREFECT_API_URL", None)
                for app in apps.values():
                    app.start()
                started = time.monotonic()

                def rotate(user: str) -> tuple[int, str]:
                    done = subprocess.run(
                        [sys.executable, "-m", "keyrotor", "rotate", user, "--local"],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=900,
                        check=False,
                    )
                    return done.returncode, done.stderr[-1500:]

                # Prefect's temporary server starts once, before the rotations share it.
                subprocess.run(
                    [sys.executable, "-m", "keyrotor", "status", users[0]], env=env, capture_output=True, check=False
                )
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    results = dict(zip(users, pool.map(rotate, users), strict=True))
                elapsed = time.monotonic() - started
                stats = {user: app.stop() for user, app in apps.items()}
                faults = iam_proxy.plan.counts + vault_proxy.plan.counts
            orphans, stashed, unrotated = [], [], []
            for user in users:
                keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
                published = connections.records(user).published()
                named = published.key_id if published else None
                orphans += [key for key in keys if key != named]
                if connections.records(user).stashed() is not None:
                    stashed.append(user)
                if named == old[user] or keys != [named]:
                    unrotated.append(user)
        finally:
            stack.stop(purge=True)
    converged = [user for user, (code, _) in results.items() if code == 0]
    calls = sum(s.calls for s in stats.values())
    refused = sum(len(s.errors) for s in stats.values())
    injected = {kind: n for kind, n in sorted(faults.items()) if kind != "forward"}
    print(f"rotations {len(users)} (concurrency {args.concurrency}), fault rate {args.rate:.0%}, {elapsed:.0f}s")
    print(f"converged on the first run: {len(converged)}/{len(users)}; not rotated: {len(unrotated)}")
    print(f"application calls {calls}, refused {refused}")
    print(f"keys whose secret nobody holds: {len(orphans)}; unpublished secrets left in Vault: {len(stashed)}")
    print(f"requests forwarded {faults['forward']}, faults injected {sum(injected.values())}: {injected}")
    for user, (code, err) in results.items():
        if code != 0:
            print(f"--- {user} exited {code}:\n{err}", file=sys.stderr)
    ok = len(converged) == len(users) and not unrotated and not refused and not orphans and not stashed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
