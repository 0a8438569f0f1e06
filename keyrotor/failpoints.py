"""Named crash and stall points for the crash-and-resume tests.

``KEYROTOR_FAILPOINT=after-create-key`` makes the process SIGKILL itself at that point, exactly as a lost
machine would stop it: no ``finally``, no Prefect hook, no lease release runs. ``KEYROTOR_STALL=saved-verified:8``
makes it sleep 8 s there instead, so a test can act on a run that is busy (the Prefect UI's Pause is offered only
for running runs); ``KEYROTOR_STALL=saved-verified:8:stall-`` only in rotations of users whose name starts with
``stall-`` (a runner serving every test's runs stalls one test's). Unset (always, in production), a failpoint costs two environment lookups. The unit tests swap
:data:`crash` for an exception, to crash the steps at every point in microseconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

ENV = "KEYROTOR_FAILPOINT"
STALL_ENV = "KEYROTOR_STALL"


def _kill(name: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


#: What reaching the named failpoint does: kill this process (tests of the steps alone raise instead).
crash: Callable[[str], None] = _kill


def failpoint(name: str, subject: str = "") -> None:
    """Crash if ``KEYROTOR_FAILPOINT`` names this point; stall if ``KEYROTOR_STALL`` does (for this subject)."""
    if os.environ.get(ENV) == name:
        crash(name)
    point, _, rest = os.environ.get(STALL_ENV, "").partition(":")
    seconds, _, prefix = rest.partition(":")
    if point == name and subject.startswith(prefix):
        time.sleep(float(seconds or 5))
