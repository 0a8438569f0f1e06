"""A loopback HTTP proxy that injects faults between keyrotor and a server (moto for IAM/STS, OpenBao for Vault).

Applications talk to the servers directly; keyrotor talks through the proxy, which forwards each request and, with
probability ``rate``, does one of these instead:

* ``throttle``: answers as the service does when it throttles (IAM's 400 ``Throttling``; Vault's 429);
* ``error500`` / ``error503``: answers a server error, without forwarding;
* ``drop``: closes the connection without forwarding (a connection reset);
* ``lost_answer``: forwards the request, lets the server act on it, then closes the connection without answering:
  the change happened and the client never hears of it, the case AWS's lack of idempotency tokens makes hard.

``down(seconds)`` makes it refuse everything for a while (an outage). Counters say what it did. It is for tests
and benchmarks only; it runs in a thread of the process that controls it.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("throttle", "error500", "error503", "drop", "lost_answer")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_IAM_THROTTLE = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
    b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
)


@dataclass
class FaultPlan:
    """What the proxy does to each request: which faults, how often, and whether it is down."""

    rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    down_until: float = 0.0
    seed: int | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def choose(self) -> str:
        """``forward``, ``down`` or one of :data:`FAULTS`, counted."""
        with self._lock:
            if time.monotonic() < self.down_until:
                choice = "down"
            elif self.faults and self._random.random() < self.rate:
                choice = self._random.choice(self.faults)
            else:
                choice = "forward"
            self.counts[choice] += 1
            return choice


class FaultProxy:
    """The proxy in front of one server; use it as a context manager, point keyrotor at :attr:`url`."""

    def __init__(self, target: str, plan: FaultPlan | None = None, vault: bool = False) -> None:
        self.target = urlsplit(target)
        self.plan = plan or FaultPlan()
        self.vault = vault
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def down(self, seconds: float) -> None:
        """Refuse every request for ``seconds`` from now (an outage of the server behind it)."""
        self.plan.down_until = time.monotonic() + seconds

    def up(self) -> None:
        self.plan.down_until = 0.0

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        return

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        choice = self.proxy.plan.choose()
        if choice in ("down", "drop"):
            return self._hang_up()
        if choice == "throttle":
            return (
                self._answer(429, b'{"errors":["rate limited"]}')
                if self.proxy.vault
                else self._answer(400, _IAM_THROTTLE, "text/xml")
            )
        if choice in ("error500", "error503"):
            return self._answer(int(choice[-3:]), b'{"errors":["injected"]}' if self.proxy.vault else b"<Error/>")
        status, headers, answer = self._forward(body)
        if choice == "lost_answer":
            return self._hang_up()
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        target = self.proxy.target
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 80, timeout=60)
        try:
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():  # the Host the client signed is passed on as it is
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle
    do_LIST = _handle  # Vault's LIST verb
