"""Benchmark a fleet remediation that waits: N users with one old key each, quiet period W, grace period 0.

For each way of running the deployments (``--runners serve``, ``workers`` or ``both``, side by side in one run),
it starts a local stack (moto, OpenBao, Prefect server on PostgreSQL) on free ports and then:

* serve: ``keyrotor serve --limit C``, as a newcomer would serve the deployments;
* workers: a process work pool ``keyrotor`` with concurrency limit C, ``prefect deploy --all`` from this checkout,
  two ``prefect worker start --pool keyrotor`` (each in a folder of its own, with heartbeats on) and one
  ``keyrotor waker``, as README's workers section says; once the first user is rotated (runs are working), one
  worker is killed with ``kill -9`` together with its flow-run processes, as losing its machine would
  (``--no-kill`` keeps both).

It seeds N users whose one key is 120 days old and was last used two days ago, runs
``keyrotor remediate --quiet-period W --grace-period 0s`` (which starts the rotations and returns), and samples the
process table every second until every user is rotated. It prints, per way:

* the makespan (from the remediate command to the last user rotated) beside W, and the target (<= 1.5 x W);
* the most processes and threads keyrotor's processes (serve, or the worker and the waker, and the flow-run
  processes below them) had alive while every rotation was parked, and overall; their peak resident memory;
* what a rotation cost: flow runs, flow-run processes started, and CPU seconds of keyrotor (those processes and
  the remediate command) and of the Prefect server, per rotation.

It exits 1 when a user is not rotated or a makespan misses 1.5 x W.

Run it with ``.venv/bin/python bench/fleet.py [--users 100] [--concurrency 4] [--quiet-period 600] [--runners both]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
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
            stop(process)


ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def working(env: dict[str, str], limit: int, folder: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A process work pool limited to ``limit``, the deployments deployed to it, two workers and one waker."""

    def prefect(*args: str) -> None:
        subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)

    prefect("work-pool", "create", "keyrotor", "--type", "process")
    prefect("work-pool", "set-concurrency-limit", "keyrotor", str(limit))
    prefect("--no-prompt", "deploy", "--all")
    worker_env = env | {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    commands = {
        "worker-a": [str(BIN / "prefect"), "worker", "start", "--pool", "keyrotor", "--name", "worker-a"],
        "worker-b": [str(BIN / "prefect"), "worker", "start", "--pool", "keyrotor", "--name", "worker-b"],
        "waker": [sys.executable, "-m", "keyrotor", "waker"],
    }
    processes = []
    try:
        for name, command in commands.items():
            (folder / name).mkdir()
            with (folder / f"{name}.log").open("wb") as out:
                processes.append(subprocess.Popen(command, cwd=folder / name, env=worker_env, stdout=out, stderr=out))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)


def kill_tree(root: int) -> None:
    """SIGKILL a process and everything below it."""
    for pid in tree_of(root)[1]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def seed(endpoint: str, prefix: str, count: int) -> list[str]:
    from keyrotor.stack.seed import SeedKey, SeedUser, seed_users

    now = datetime.now(UTC)
    old = SeedKey(created=now - timedelta(days=120), last_used=now - timedelta(days=2))
    return list(seed_users(endpoint, [SeedUser(f"{prefix}{i:05d}", (old,)) for i in range(count)]))


def wait_ready(api: str, processes: list[subprocess.Popen[bytes]], folder: Path) -> None:
    """Until something polls for rotate-access-key's runs (serve, or a worker of its pool)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from keyrotor.adapters.prefect_api import served
    from keyrotor.deployments.table import ROTATE

    deadline = time.monotonic() + 180
    with temporary_settings(updates={PREFECT_API_URL: api}):
        while not served(ROTATE.full_name):
            if any(process.poll() is not None for process in processes):
                logs = "".join(log.read_text()[-2000:] for log in folder.glob("*.log"))
                raise SystemExit(f"a runner exited:\n{logs}")
            if time.monotonic() > deadline:
                raise SystemExit("nothing ever served the deployments")
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


@dataclass
class Result:
    """What one way of running the deployments measured."""

    runners: str
    users: int
    returned: float
    makespan: float
    rotated: int
    samples: Samples
    runs: int
    processes_started: int
    keyrotor_cpu: float
    prefect_cpu: float
    killed_after: float | None = None  # seconds after the remediate command, when a worker was killed


@contextmanager
def runners(how: str, env: dict[str, str], limit: int, folder: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The processes that run the deployments' flow runs and wake parked rotations."""
    if how == "serve":
        with serving(env, limit, folder / "serve.log") as serve:
            yield [serve]
    else:
        with working(env, limit, folder) as processes:
            yield processes


def measure(how: str, users_wanted: int, limit: int, quiet: int, kill: bool) -> Result:
    """One fleet on a fresh stack, its deployments run by ``how`` (serve or workers; ``kill``: one worker is
    killed once the first user is rotated)."""
    from keyrotor.adapters.connections import Connections
    from keyrotor.core.model import Phase
    from keyrotor.settings import Settings
    from keyrotor.stack.services import LocalStack, StackPorts

    with tempfile.TemporaryDirectory(prefix=f"keyrotor-fleet-bench-{how}-") as name:
        folder = Path(name)
        stack = LocalStack.start(folder / "stack", StackPorts(0, 0, 0))
        try:
            env = {
                **os.environ,
                **stack.env,
                "PREFECT_HOME": str(folder / "client"),
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "VAULT_", "PREFECT_"))})
            prefix = "fleet-"
            users = seed(stack.env["AWS_ENDPOINT_URL"], prefix, users_wanted)
            api = stack.env["PREFECT_API_URL"]
            with runners(how, env, limit, folder) as roots:
                wait_ready(api, roots, folder)
                prefect_pid = stack.services["prefect"].pid
                prefect_cpu0 = cpu_seconds(prefect_pid)
                roots_cpu0 = sum(cpu_seconds(root.pid) for root in roots)
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
                    raise SystemExit(f"keyrotor remediate failed ({how}):\n{done.stderr[-3000:]}")
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
                killed_after: float | None = None
                killed_cpu = 0.0
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
                            f"  {how} {now - started:6.0f}s: {len(finished)}/{len(users)} rotated, "
                            f"{parked_seen} parked",
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
                    if kill and how == "workers" and finished and killed_after is None:
                        victim = roots[0]
                        killed_cpu = cpu_seconds(victim.pid)  # its flow runs' CPU dies with them, uncounted
                        kill_tree(victim.pid)
                        victim.wait()
                        killed_after = now - started
                        print(f"  killed worker-a and its flow runs after {killed_after:.0f}s", file=sys.stderr)
                    tree, members = Tree(), []
                    for root in roots:
                        if root.poll() is not None:
                            continue
                        part, below = tree_of(root.pid)
                        tree = Tree(
                            tree.processes + part.processes, tree.threads + part.threads, tree.rss_mib + part.rss_mib
                        )
                        members += below
                    samples.add(tree, members, parked=waiting)
                    if now - started > quiet * 6 + 3600:
                        print("gave up: not every user was rotated", file=sys.stderr)
                        break
                    time.sleep(1)
                roots_cpu = sum(cpu_seconds(r.pid) for r in roots if r.poll() is None) + killed_cpu - roots_cpu0
                prefect_cpu = cpu_seconds(prefect_pid) - prefect_cpu0
                runs, _ = run_costs(api, tag)
        finally:
            stack.stop(purge=True)
    return Result(
        runners=how,
        users=len(users),
        returned=returned,
        makespan=max(finished.values()) if len(finished) == len(users) else float("nan"),
        rotated=len(finished),
        samples=samples,
        runs=runs,
        processes_started=len(samples.pids) - len(roots),  # every process seen below the roots, sampled each second
        keyrotor_cpu=roots_cpu + remediate_cpu,
        prefect_cpu=prefect_cpu,
        killed_after=killed_after,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4, help="keyrotor serve --limit, or the pool's limit")
    parser.add_argument("--quiet-period", type=int, default=600, help="W, in seconds")
    parser.add_argument("--runners", choices=("serve", "workers", "both"), default="both")
    parser.add_argument("--no-kill", action="store_true", help="workers: kill no worker")
    args = parser.parse_args()
    quiet = args.quiet_period
    ways = ("serve", "workers") if args.runners == "both" else (args.runners,)
    results = [measure(how, args.users, args.concurrency, quiet, kill=not args.no_kill) for how in ways]

    print(f"users {args.users}, at most {args.concurrency} flow runs at once, quiet period W {quiet}s")
    ok = True
    for r in results:
        met = r.rotated == r.users and r.makespan <= 1.5 * quiet
        ok &= met
        parked = r.samples.most_while_parked
        if r.killed_after is not None:
            print(
                f"{r.runners:>7}: one of two workers killed (kill -9, with its flow runs) after {r.killed_after:.0f}s"
            )
        print(
            f"{r.runners:>7}: remediate returned after {r.returned:.1f}s; every user rotated after "
            f"{r.makespan:.1f}s = {r.makespan / quiet:.2f} W (target <= 1.5 W: {'met' if met else 'MISSED'}); "
            f"rotated {r.rotated}/{r.users}"
        )
        if r.samples.parked_samples:
            print(
                f"         while all were parked ({r.samples.parked_samples} samples): at most {parked.processes} "
                f"processes, {parked.threads} threads, {parked.rss_mib:.0f} MiB"
            )
        else:
            print("         the first rotations were woken before the last ones parked: no sample with all parked")
        print(
            f"         overall: at most {r.samples.most.processes} processes, {r.samples.most.threads} threads; "
            f"peak RSS {r.samples.peak_rss_mib:.0f} MiB"
        )
        print(
            f"         per rotation: {r.runs / r.users:.2f} flow runs, {r.processes_started / r.users:.2f} flow-run "
            f"processes started, {r.keyrotor_cpu / r.users:.2f} CPU s keyrotor (runners, their flow runs and the "
            f"remediate command), {r.prefect_cpu / r.users:.2f} CPU s Prefect server"
        )
    if len(results) == 2:
        serve, workers = results
        print(
            f"workers / serve: makespan {workers.makespan / serve.makespan:.2f}x, keyrotor CPU per rotation "
            f"{workers.keyrotor_cpu / serve.keyrotor_cpu:.2f}x, peak RSS "
            f"{workers.samples.peak_rss_mib / serve.samples.peak_rss_mib:.2f}x"
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
