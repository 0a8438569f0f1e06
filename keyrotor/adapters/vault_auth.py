"""How keyrotor logs in to Vault (or OpenBao), and keeps its login alive for as long as a rotation lasts.

``token`` (default): ``VAULT_TOKEN`` or ``~/.vault-token``; a renewable token is renewed before it expires.
``approle``: ``KEYROTOR_VAULT_ROLE_ID`` and a secret id from ``KEYROTOR_VAULT_SECRET_ID`` or the file in
``KEYROTOR_VAULT_SECRET_ID_FILE``. ``jwt`` (JWT/OIDC) and ``kubernetes``: ``KEYROTOR_VAULT_ROLE`` and a JWT read
from ``KEYROTOR_VAULT_JWT_FILE`` at each login (a projected service-account token is rotated on disk; Kubernetes'
default path is used when none is set). The auth mount is ``KEYROTOR_VAULT_AUTH_MOUNT`` (default: the method's
name). ``VAULT_NAMESPACE`` is honoured by the client.

A login's token lives for its lease; a waker or a rotation that waits for days outlives it. Before every call the
login is renewed once two thirds of its time are gone, or done again when it cannot be renewed; a call refused as
unauthenticated (the token expired or was revoked anyway) logs in again and is tried once more.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import requests

KUBERNETES_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
METHODS = ("token", "approle", "jwt", "kubernetes")


@dataclass(frozen=True)
class VaultLogin:
    """The login method and what it needs (secrets are read when logging in, never kept in this object's repr)."""

    method: str = "token"
    mount: str | None = None
    role: str | None = None
    role_id: str | None = None
    secret_id_file: Path | None = None
    jwt_file: Path | None = None

    def describe(self) -> str:
        return f"{self.method} login" + (f" (role {self.role or self.role_id})" if self.method != "token" else "")


class Authenticator:
    """Logs an hvac client in, and keeps the login fresh; thread-safe (one per client)."""

    def __init__(self, client: hvac.Client, login: VaultLogin, secret_id: str | None = None) -> None:
        self._client = client
        self.login = login
        self._secret_id = secret_id
        self._lock = threading.Lock()
        self._renew_at: float | None = None  # monotonic time after which the token should be renewed
        self._checked = False

    def ensure(self) -> None:
        """Make sure the client holds a token that will outlive the next call."""
        with self._lock:
            if self.login.method == "token":
                self._keep_token_alive()
            elif self._renew_at is None or time.monotonic() >= self._renew_at:
                self._renew_or_login()

    def relogin(self) -> bool:
        """Log in again after a refusal; False for the token method (nothing keyrotor can do about a bad token)."""
        if self.login.method == "token":
            return False
        with self._lock:
            self._login()
        return True

    # --- token: renew a renewable token ------------------------------------------------------------------------
    def _keep_token_alive(self) -> None:
        if self._checked and (self._renew_at is None or time.monotonic() < self._renew_at):
            return
        data = self._client.auth.token.lookup_self()["data"]
        self._checked = True
        ttl = int(data.get("ttl") or 0)
        if ttl and data.get("renewable") and self._renew_at is not None:
            data = self._client.auth.token.renew_self()["auth"]
            ttl = int(data.get("lease_duration") or 0)
        self._schedule(ttl)

    # --- login methods ------------------------------------------------------------------------------------------
    def _renew_or_login(self) -> None:
        if self._renew_at is not None:
            try:
                auth = self._client.auth.token.renew_self()["auth"]
                self._schedule(int(auth.get("lease_duration") or 0))
                return
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
                pass  # not renewable, or past its max TTL: log in again
        self._login()

    def _login(self) -> None:
        login = self.login
        mount = login.mount or login.method
        if login.method == "approle":
            response = self._client.auth.approle.login(
                role_id=login.role_id, secret_id=self._read_secret_id(), mount_point=mount
            )
        elif login.method == "jwt":
            response = self._client.auth.jwt.jwt_login(role=login.role, jwt=self._read_jwt(), path=mount)
        elif login.method == "kubernetes":
            response = self._client.auth.kubernetes.login(role=login.role, jwt=self._read_jwt(), mount_point=mount)
        else:
            raise ValueError(f"unknown Vault login method {login.method!r}")
        self._client.token = response["auth"]["client_token"]
        self._schedule(int(response["auth"].get("lease_duration") or 0))

    def _schedule(self, ttl: int) -> None:
        self._renew_at = time.monotonic() + ttl * 2 / 3 if ttl > 0 else None
        if ttl == 0 and self.login.method != "token":
            self._renew_at = time.monotonic() + 3600  # a login without a TTL: look again in an hour

    def _read_secret_id(self) -> str:
        if self.login.secret_id_file is not None:
            return self.login.secret_id_file.read_text().strip()
        if self._secret_id is None:
            raise ValueError("AppRole login needs KEYROTOR_VAULT_SECRET_ID or KEYROTOR_VAULT_SECRET_ID_FILE")
        return self._secret_id

    def _read_jwt(self) -> str:
        path = self.login.jwt_file or (KUBERNETES_TOKEN if self.login.method == "kubernetes" else None)
        if path is None:
            raise ValueError("JWT login needs KEYROTOR_VAULT_JWT_FILE (a file holding the JWT)")
        return path.read_text().strip()
