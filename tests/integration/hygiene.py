"""The secret-hygiene scan: no secret access key that Vault ever held is in any file Prefect or keyrotor wrote
(databases as stored and dumped, result storage, logs, output). Used by ``test_secret_hygiene.py`` and, at the end
of every worker's session, over everything that session wrote."""

from __future__ import annotations

import base64
import binascii
import contextlib
import subprocess
from pathlib import Path

from keyrotor.adapters.connections import Connections
from keyrotor.stack import postgres
from keyrotor.stack.services import LocalStack
from tests.conftest import OUTPUT


def _views(data: bytes) -> list[bytes]:
    """The bytes as stored, plus their base64 decoding when they are base64 (Prefect stores pickles that way)."""
    views = [data]
    with contextlib.suppress(binascii.Error, ValueError):
        views.append(base64.b64decode(b"".join(data.split()), validate=True))
    return views


def files_containing(roots: list[Path], secrets: list[str]) -> list[str]:
    needles = [secret.encode() for secret in secrets]
    found = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            if any(needle in view for view in _views(path.read_bytes()) for needle in needles):
                found.append(str(path))
    return found


def secrets_ever_published(connections: Connections) -> list[str]:
    """Every secret access key this session published to Vault (every version of every user's secret path)."""
    folder = connections.settings.vault_path.format(account_id=connections.account_id, user_name="").rstrip("/")
    found = []
    for entry in connections.kv.list(folder):
        records = connections.records(entry.rstrip("/"))
        for version in range(1, records.kv.current_version(records.paths.secret) + 1):
            credentials = records.published_credentials(version)
            if credentials is not None:
                found.append(credentials.secret.get_secret_value())
    return found


def where_secrets_are(stack: LocalStack, secrets: list[str], scratch: Path) -> list[str]:
    """The files holding any of ``secrets``: in the session's output folder, the Prefect server's PostgreSQL files
    as stored, and (since PostgreSQL compresses large values) a plain dump of its database. On the SQLite
    fallback (PostgreSQL could not run), the database is a file inside the output folder."""
    if "postgres" not in stack.services:
        return files_containing([OUTPUT], secrets)
    data = stack.services["postgres"].data  # inside OUTPUT, or where nobody could reach it (root, private folder)
    assert data is not None and (data / "PG_VERSION").is_file()
    dump = scratch / "prefect-database.sql"
    port = stack.services["postgres"].port
    command = [str(postgres.bin_dir() / "pg_dump"), "-h", "127.0.0.1", "-p", str(port), "-U", postgres.USER]
    with dump.open("wb") as out:
        subprocess.run([*command, postgres.DATABASE], stdout=out, check=True, timeout=120)
    assert dump.stat().st_size > 100_000 and b"flow_run" in dump.read_bytes()
    return files_containing([OUTPUT, data, dump], secrets)
