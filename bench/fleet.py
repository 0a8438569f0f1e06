"""Benchmark a fleet remediation that waits: N users with one old key each, quiet period W, grace period 0.

Starts a local stack (moto, OpenBao, Prefect server on PostgreSQL) on free ports and ``keyrotor serve --limit C``
as a newcomer would serve the deployments, seeds N users whose one key is 120 days old and was last used two days
ago, runs ``keyrotor remediate --quiet-period W --grace-period 0s`` (which starts the rotations and returns), and
samples the process table every second until every user is rotated. It prints:

* the makespan (from the remediate command to the last user rotated) beside W, and the target (<= 1.5 x W);
* the most processes and threads ``keyrotor serve`` and its flow-run processes had alive while every rotation
  was parked, and overall; their peak resident memory (summed over the process tree);
* what a rotation cost: flow runs, flow-run processes started, and CPU seconds of keyrotor (serve and its
  children) and of the Prefect server, per rotation.

It exits 1 when a user is not rotated or the makespan misses 1.5 x W.

Run it with ``.venv/bin/python bench/fleet.py [--users 100] [--concurrency 4] [--quiet-period 600]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Tree:
    """One sample of a process and everything below it."""

    processes: int = 0
    threads: int = 0
    rss_mib: float = 0.0


@dataclass
class Samples:
    """What the process table showed over the run."""

    most: Tree = field(default_factory=Tree)
    most_while_parked: Tree = field(default_factory=Tree)
    peak_rss_mib: float = 0.0
    pids: set[int] = field(default_factory=set)
    parked_samples: int = 0

    def add(self, tree: Tree, members: list[int], parked: bool) -> None:
        self.peak_rss_mib = max(self.peak_rss_mib, tree.rss_mib)
        self.pids.update(members)
        self.parked_samples += parked
        for target in (self.most, *([self.most_while_parked] if parked else [])):
            target.processes = max(target.processes, tree.processes)
            target.threads = max(target.threads, tree.threads)
            target.rss_mib = max(target.rss_mib, tree.rss_mib)


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, threads, resident pages), for every process."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(proc.name)] = (int(stat[1]), int(stat[17]), int(stat[21]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def tree_of(root: int) -> tuple[Tree, list[int]]:
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    members, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            members.append(pid)
            todo.extend(children.get(pid, []))
    tree = Tree(
        processes=len(members),
        threads=sum(table[pid][1] for pid in members),
        rss_mib=sum(table[pid][2] for pid in members) * PAGE / 2**20,
    )
    return tree, members


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and of its children that it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


@contextmanager
def serving(env: dict[str, str], limit: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyrotor", "serve", "--limit", str(limit)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def seed(endpoint: str, prefix: str, count: int) -> list[str]:
    from keyrotor.stack.seed import SeedKey, SeedUser, seed_users

    now = datetime.now(UTC)
    old = SeedKey(created=now - timedelta(days=120), last_used=now - timedelta(days=2))
    return list(seed_users(endpoint, [SeedUser(f"{prefix}{i:05d}", (old,)) for i in range(count)]))


def wait_ready(api: str, process: subprocess.Popen[bytes], log: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import DeploymentStatus
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 180
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"keyrotor serve exited:\n{log.read_text()[-3000:]}")
            ready = [d for d in client.read_deployments() if d.status == DeploymentStatus.READY]
            if any(d.name == "rotate-access-key" for d in ready):
                return
            if time.monotonic() > deadline:
                raise SystemExit("keyrotor serve never served its deployments")
            time.sleep(1)


def run_costs(api: str, tag: str) -> tuple[int, int]:
    """Flow runs carrying the remediation's tag, and the processes they started (one per run attempt)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runs: list[Any] = []
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=200, offset=len(runs)
            )
            runs.extend(page)
            if len(page) < 200:
                break
    return len(runs), sum(run.run_count for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="keyrotor serve --limit")
    parser.add_argument("--quiet-period", type=int, default=600, help="W, in seconds")
    args = parser.parse_args()

    from keyrotor.adapters.connections import Connections
    from keyrotor.core.model import Phase
    from keyrotor.settings import Settings
    from keyrotor.stack.services import LocalStack, StackPorts

    quiet = args.quiet_period
    with tempfile.TemporaryDirectory(prefix="keyrotor-fleet-bench-") as folder:
        stack = LocalStack.start(Path(folder) / "stack", StackPorts(0, 0, 0))
        try:
            env = {
                **os.environ,
                **stack.env,
                "PREFECT_HOME": str(Path(folder) / "client"),
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "VAULT_", "PREFECT_"))})
            prefix = "fleet-"
            users = seed(stack.env["AWS_ENDPOINT_URL"], prefix, args.users)
            api = stack.env["PREFECT_API_URL"]
            log = Path(folder) / "serve.log"
            with serving(env, args.concurrency, log) as serve:
                wait_ready(api, serve, log)
                prefect_pid = stack.services["prefect"].pid
                prefect_cpu0, serve_cpu0 = cpu_seconds(prefect_pid), cpu_seconds(serve.pid)
                started = time.monotonic()
                command = [
                    sys.executable,
                    "-m",
                    "keyrotor",
                    "remediate",
                    "--json",
                    "--user",
                    f"{prefix}*",
                    "--quiet-period",
                    f"{quiet}s",
                    "--grace-period",
                    "0s",
                ]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                remediate_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                report = json.loads(done.stdout)
                returned = time.monotonic() - started
                tag = next(t for t in _tags(api, report) if t.startswith("remediation:"))
                connections = Connections.from_settings(Settings())
                samples = Samples()
                finished: dict[str, float] = {}
                parked_seen = 0
                next_poll = 0.0
                all_parked_at: float | None = None
                first_due = datetime.max.replace(tzinfo=UTC)
                while len(finished) < len(users):
                    now = time.monotonic()
                    if now >= next_poll:
                        parked_seen = len(connections.waiting.users(connections.account_id))
                        for user in users:
                            if user in finished:
                                continue
                            state = connections.records(user).load_state()
                            if state is not None and state.phase is Phase.COMPLETED:
                                finished[user] = now - started
                        next_poll = now + max(5, len(users) / 100)  # reading every record costs CPU too
                        print(
                            f"  {now - started:6.0f}s: {len(finished)}/{len(users)} rotated, {parked_seen} parked",
                            file=sys.stderr,
                        )
                    if all_parked_at is None and not finished and parked_seen == len(users):
                        all_parked_at = now
                        # No rotation can be woken before the first publish plus the quiet period.
                        published = [connections.records(u).load_state().published_at for u in users]
                        first_due = min(p for p in published if p) + timedelta(seconds=quiet)
                    # The wait: every rotation parked (their processes given 15 s to exit), none due yet.
                    waiting = (
                        all_parked_at is not None
                        and now > all_parked_at + 15
                        and datetime.now(UTC) < first_due - timedelta(seconds=5)
                    )
                    tree, members = tree_of(serve.pid)
                    samples.add(tree, members, parked=waiting)
                    if now - started > quiet * 6 + 3600:
                        print("gave up: not every user was rotated", file=sys.stderr)
                        break
                    time.sleep(1)
                makespan = max(finished.values()) if finished else float("nan")
                serve_cpu = cpu_seconds(serve.pid) - serve_cpu0
                prefect_cpu = cpu_seconds(prefect_pid) - prefect_cpu0
                runs, _ = run_costs(api, tag)
        finally:
            stack.stop(purge=True)
    n = len(users)
    ok = len(finished) == n and makespan <= 1.5 * quiet
    print(f"users {n}, runner limit {args.concurrency}, quiet period W {quiet}s")
    print(
        f"remediate returned after {returned:.1f}s; every user rotated after {makespan:.1f}s = {makespan / quiet:.2f} W"
        f" (target <= 1.5 W: {'met' if ok else 'MISSED'}); rotated {len(finished)}/{n}"
    )
    if samples.parked_samples:
        print(
            f"while all were parked ({samples.parked_samples} samples): at most "
            f"{samples.most_while_parked.processes} processes, {samples.most_while_parked.threads} threads, "
            f"{samples.most_while_parked.rss_mib:.0f} MiB (keyrotor serve and its flow runs)"
        )
    else:
        print("the first rotations were woken before the last ones parked: no sample with every rotation parked")
    print(
        f"overall: at most {samples.most.processes} processes, {samples.most.threads} threads; "
        f"peak RSS {samples.peak_rss_mib:.0f} MiB"
    )
    started_processes = len(samples.pids) - 1  # every process seen below keyrotor serve (sampled each second)
    print(
        f"per rotation: {runs / n:.2f} flow runs, {started_processes / n:.2f} flow-run processes started, "
        f"{(serve_cpu + remediate_cpu) / n:.2f} CPU s keyrotor (serve, its flow runs and the remediate command), "
        f"{prefect_cpu / n:.2f} CPU s Prefect server"
    )
    return 0 if ok else 1


def _tags(api: str, report: dict[str, Any]) -> list[str]:
    """The tags of one of the runs the remediation started (they all carry its remediation:<run> tag)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    run_id = next(o["flow_run_id"] for o in report["outcomes"] if o.get("flow_run_id"))
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return list(client.read_flow_run(UUID(run_id)).tags)


if __name__ == "__main__":
    sys.exit(main())
