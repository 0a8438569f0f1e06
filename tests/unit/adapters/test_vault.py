"""Vault calls ride out a burst of failures even when each failure is slow: the retry budget is a time *and* a
number of attempts, so a loaded machine (each failed attempt taking seconds) still gets several tries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler

import pytest

from keyrotor.adapters.vault import MIN_ATTEMPTS, VaultKV, make_client
from tests.helpers import loopback_http


class SlowlyFailingVault(BaseHTTPRequestHandler):
    """Drops the first ``failures`` requests after ``delay`` seconds (a reset connection, as under load), then
    answers every read with 404 (no such secret)."""

    failures = 0
    delay = 0.0
    seen = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            time.sleep(type(self).delay)
            self.close_connection = True
            self.connection.close()
            return
        body = b'{"errors": []}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def vault() -> Iterator[tuple[str, type[SlowlyFailingVault]]]:
    handler = type("Handler", (SlowlyFailingVault,), {"failures": 0, "delay": 0.0, "seen": 0})
    with loopback_http(handler) as url:
        yield url, handler


def test_slow_failures_still_get_several_attempts_within_a_short_budget(
    vault: tuple[str, type[SlowlyFailingVault]],
) -> None:
    addr, handler = vault
    handler.failures, handler.delay = 3, 0.6  # three failures of 0.6 s each outlast a 1 s budget by themselves
    kv = VaultKV(make_client(addr, "t", timeout=5), "secret", retry_for=timedelta(seconds=1))
    assert kv.read("nobody") is None
    assert handler.seen == 4


def test_a_vault_that_keeps_failing_gives_up_after_the_budget_and_the_attempts(
    vault: tuple[str, type[SlowlyFailingVault]],
) -> None:
    addr, handler = vault
    handler.failures = 1000
    kv = VaultKV(make_client(addr, "t", timeout=5), "secret", retry_for=timedelta(seconds=0.5))
    started = time.monotonic()
    with pytest.raises(Exception, match="unreachable"):
        kv.read("nobody")
    assert handler.seen >= MIN_ATTEMPTS
    assert time.monotonic() - started < 3  # quick failures: the attempts fit (about) the budget
