"""Named crash points for the crash-and-resume tests.

``KEYROTOR_FAILPOINT=after-create-key`` makes the process SIGKILL itself at that point, exactly as a lost
machine would stop it: no ``finally``, no Prefect hook, no lease release runs. Unset (always, in production),
a failpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "KEYROTOR_FAILPOINT"


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``KEYROTOR_FAILPOINT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
