"""moto's IAM and STS over HTTP, refusing the credentials real AWS refuses: the stack's AWS.

The server is moto's own WSGI application with four layers around and inside it, each in a module of its own:

* :mod:`keyrotor.stack.moto_gate` refuses requests signed with unknown, deleted, Inactive or wrongly-signed IAM
  user keys before moto sees them (moto accepts any key and records its use), and AssumeRole into refused accounts;
* :mod:`keyrotor.stack.moto_trail` records every call made with an IAM user key and answers CloudTrail's
  ``LookupEvents`` from that record (moto has no CloudTrail lookups);
* :mod:`keyrotor.stack.moto_controls` answers local-only controls under ``/_keyrotor/`` (back-dating keys, seeding
  users in bulk, refusing AssumeRole), which AWS's API cannot express;
* :mod:`keyrotor.stack.moto_patches` makes two IAM answers closer to AWS's and moto's dispatching cheaper.

This module puts them together and is the process the stack runs
(:class:`keyrotor.stack.catalog.MotoService`): ``python -m keyrotor.stack.moto_server --host 127.0.0.1 --port 5000``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from keyrotor.stack.moto_controls import LocalControls
from keyrotor.stack.moto_gate import (
    KeyStatusGate,
)
from keyrotor.stack.moto_patches import CachingDispatcher, patch_iam_responses
from keyrotor.stack.moto_trail import KeyTrail


def create_app() -> LocalControls:
    """Build moto's server application behind the key-status gate, with the local-only controls.

    Returns:
        A WSGI application serving all of moto's services, IAM and STS gated.
    """
    patch_iam_responses()
    return LocalControls(KeyTrail(KeyStatusGate(CachingDispatcher(create_backend_app))))


def create_server(host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """Create a threaded HTTP server for :func:`create_app`, e.g. to run in-process.

    Call ``serve_forever()`` (in a thread, for in-process use) and ``shutdown()`` when done.

    Args:
        host: The address to bind.
        port: The port to bind; 0 picks a free one (see ``server.server_port``).

    Returns:
        The bound, not yet serving, server.
    """
    return make_server(host, port, create_app(), threaded=True, request_handler=MotoRequestHandler)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into a normal exit, so the stack's stop ends the server cleanly."""
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """Serve the gated moto application until terminated.

    Args:
        argv: Command-line arguments (``--host``, ``--port``); defaults to ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description="moto's IAM/STS server, refusing inactive and unknown keys.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to bind (default: 5000)")
    args = parser.parse_args(argv)
    server = create_server(args.host, args.port)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    print(f"keyrotor moto server on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
