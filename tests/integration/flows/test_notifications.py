"""Notifications end to end: `keyrotor notifications apply` with a real HTTP receiver on loopback as the webhook,
the stack's Prefect server running its own automations and delivering the messages.

A rotation that stops at its deadline (an application that never reads Vault) produces exactly one message, even
when it is run again from the top, naming the user, the owner, the keys, the consumer still on the old key and the
command; a completed rotation produces its message when asked for; applying twice creates nothing twice.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.notifications import PREFIX
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.helpers import keyrotor_cli, keyrotor_process, loopback_http
from tests.integration.support import active_keys, run_state, schedule_rotation, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook on loopback: every JSON body POSTed to it, in order."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    with loopback_http(Handler) as url:
        yield f"{url}/hook", received


def automation_ids(env: dict[str, str]) -> list[str]:
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        return sorted(str(a.id) for a in client.read_automations() if a.name.startswith(PREFIX))


def test_the_owner_is_told_once_who_still_uses_the_old_key_reminded_of_an_approval_and_when_one_completed(
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
    served: subprocess.Popen[str],
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    """Three rotations at once, so their waits overlap: one whose application never reads Vault (stopped at the
    deadline, run twice), one awaiting approval (reminded once after --remind-after, here 10 s, Prefect's shortest
    proactive trigger; then rejected), one that completes (asked for with --also)."""
    url, received = receiver
    env = stack_environ
    apply = ["notifications", "apply", "--webhook", url, "--allow-private-urls", "--also", "completed"]
    apply += ["--remind-after", "10s", "--owner-tag", "team", "--json"]
    applied = keyrotor_cli(env, *apply)
    assert applied.returncode == 0, applied.stderr
    ids = automation_ids(env)
    again = keyrotor_cli(env, *apply)
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(applied.stdout)
    assert automation_ids(env) == ids and len(ids) == 3, "applying twice creates nothing twice"

    def about(user: str, words: str, subject: str = "keyrotor: rotation of") -> list[dict[str, Any]]:
        return [
            m
            for m in received
            if m["subject"].startswith(subject) and f"rotation of {user} in" in m["text"] and words in m["text"]
        ]

    try:
        waiting = user_factory("reminded")
        run_id = schedule_rotation(waiting, quiet_period="2s", require_approval=True)

        stuck = user_factory("notified")
        iam.tag_user(UserName=stuck, Tags=[{"Key": "team", "Value": "payments"}])
        old = active_keys(iam, stuck)[0]
        app = SimulatedApp(
            stuck, connections.records(stuck), refresh=10_000, interval=0.3, user_agent="legacy-billing/4.2"
        )
        app.start()
        try:
            for _ in range(2):  # the second run starts from the top and stops at the deadline again
                ran = keyrotor_process(env, "rotate", stuck, "--local", "--quiet-period", "2s", "--max-wait", "5s")
                assert ran.returncode == 6, ran.stderr
        finally:
            app.stop()
        done = user_factory("notified-done")
        finished = keyrotor_process(env, "rotate", done, "--local", "--quiet-period", "2s", "--grace-period", "0s")
        assert finished.returncode == 0, finished.stderr

        wait_for(lambda: about(waiting, "awaits approval"), "the awaiting-approval message", timeout=90)
        wait_for(lambda: about(waiting, "", "keyrotor reminder, no answer for 10s"), "the reminder", timeout=90)
        answered = keyrotor_cli(env, "resume", waiting, "--reject", "--note", "not now")
        assert answered.returncode == 0, answered.stderr
        wait_for(lambda: run_state(run_id).is_final(), "the rejected run to end", timeout=90)
        wait_for(lambda: about(waiting, "rejected"), "the rejection's message", timeout=90)
        wait_for(lambda: about(stuck, "stopped at its deadline"), "the stuck rotation's message", timeout=90)
        wait_for(lambda: about(done, "completed"), "the completed rotation's message", timeout=90)
        # every event was sent before the rejection's: a second message for any of them would be here by now
        (message,) = about(stuck, "stopped at its deadline")
        assert len(about(waiting, "", "keyrotor reminder")) == 1, "one reminder"
        text = message["text"]
        assert old in text and "owner: payments" in text and "legacy-billing/4.2" in text, text
        assert f"next: keyrotor rotate {stuck}" in text or f"next: keyrotor rollback {stuck}" in text, text
        assert not about(stuck, "published"), "published is not asked for"
    finally:
        removed = keyrotor_cli(env, "notifications", "remove", "--json")
        assert removed.returncode == 0, removed.stderr
    assert automation_ids(env) == []
