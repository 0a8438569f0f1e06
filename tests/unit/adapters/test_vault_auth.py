"""The Vault login's failures are told apart: an unreachable Vault is an outage (retried, then VaultUnavailable),
a login that cannot be made (a missing file) is a configuration problem (VaultError), never the other way round."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest

from keyrotor.adapters.vault import VaultKV, make_client
from keyrotor.adapters.vault_auth import Authenticator, VaultLogin
from keyrotor.core.errors import VaultError, VaultUnavailable


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("login", [VaultLogin("token"), VaultLogin("approle", role_id="r", secret_id_file=None)])
def test_an_unreachable_vault_is_an_outage_whatever_the_login(login: VaultLogin) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}", "t", timeout=1)
    kv = VaultKV(client, "secret", retry_for=timedelta(seconds=0.5), auth=Authenticator(client, login, secret_id="s"))
    with pytest.raises(VaultUnavailable, match="unreachable .connection refused.; check VAULT_ADDR"):
        kv.read("anything")


def test_a_login_that_cannot_be_made_is_a_vault_error_that_says_why(tmp_path: Path) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}", None, timeout=1)
    login = VaultLogin("jwt", role="keyrotor", jwt_file=tmp_path / "missing.jwt")
    kv = VaultKV(client, "secret", retry_for=timedelta(seconds=0.5), auth=Authenticator(client, login))
    with pytest.raises(VaultError, match="cannot log in to Vault") as error:
        kv.read("anything")
    assert not isinstance(error.value, VaultUnavailable) and "missing.jwt" in str(error.value)
