from __future__ import annotations

import os
import subprocess
import sys


def test_the_audit_command_does_not_import_prefect() -> None:
    """Prefect costs about 2 s to import; ``keyrotor audit`` must stay under 3 s for 10,000 users."""
    code = (
        "import sys; from keyrotor.cli import main, audit; from keyrotor.audit import settings; from keyrotor.adapters import credential_report; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'hvac'}))"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert output.stdout.strip() == "[]"
