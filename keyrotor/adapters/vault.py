"""Vault (or OpenBao) KV version 2, with transient failures retried and hvac errors translated once.

Like hvac's own API classes, :class:`VaultKV` is handed its client and never builds its transport, so a test
can point it at a real dev server or swap the client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from keyrotor.adapters.vault_auth import Authenticator
from keyrotor.core.errors import KeyrotorError, RotationConflict, TransientError, VaultError, VaultUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class KVRecord:
    """One version of a KV v2 secret: its data, version number and creation time (ISO 8601)."""

    data: dict[str, Any] = field(repr=False)
    version: int
    created_time: str


def translate(error: Exception, action: str, addr: str) -> KeyrotorError:
    """Map hvac/requests failures to a keyrotor error that names Vault, what keyrotor was doing and what to check."""
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return TransientError(
            f"cannot {action}: Vault at {addr} is unreachable ({_reason(error)}); check VAULT_ADDR and that "
            "Vault (or OpenBao) is running and reachable from here"
        )
    if isinstance(error, hvac.exceptions.VaultDown):
        return TransientError(f"cannot {action}: Vault at {addr} is sealed or down; unseal it or wait until it is up")
    if isinstance(
        error, hvac.exceptions.InternalServerError | hvac.exceptions.BadGateway | hvac.exceptions.RateLimitExceeded
    ):
        return TransientError(f"cannot {action}: Vault at {addr} failed ({error})")
    if isinstance(error, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return VaultError(
            f"cannot {action}: Vault at {addr} denied access with this token: check VAULT_TOKEN (or ~/.vault-token) "
            "and its policy (it needs read/write on the secret and keyrotor paths of the KV mount)"
        )
    if isinstance(error, hvac.exceptions.InvalidRequest) and "check-and-set" in str(error):
        return RotationConflict(f"cannot {action}: the Vault record changed under us (check-and-set failed); try again")
    return VaultError(f"cannot {action}: Vault at {addr} answered: {error}")


def _reason(error: Exception) -> str:
    if isinstance(error, requests.exceptions.Timeout):
        return "no answer in time"
    text = str(error)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host name"
    return "connection failed"


#: Every Vault call gets at least this many attempts, however long they take: on a loaded machine a failed attempt
#: can take seconds, and a budget in time alone would then give a burst of faults only one or two tries.
MIN_ATTEMPTS = 6


class KVStore(Protocol):
    """What the durable records need from a KV v2 mount: versioned reads, check-and-set writes, listing.

    :class:`VaultKV` is the real one; the unit tests' in-memory store is another.
    """

    mount: str
    addr: str

    def check(self, retry_for: timedelta | None = None) -> None: ...

    def read(self, path: str, version: int | None = None) -> KVRecord | None: ...

    def current_version(self, path: str) -> int: ...

    def write(self, path: str, data: dict[str, Any], cas: int | None) -> KVRecord: ...

    def keep_versions(self, path: str, count: int) -> None: ...

    def destroy(self, path: str) -> None: ...

    def list(self, path: str) -> list[str]: ...


class VaultKV:
    """The few KV v2 operations keyrotor uses, on one mount."""

    def __init__(
        self,
        client: hvac.Client,
        mount: str,
        retry_for: timedelta = timedelta(seconds=30),
        auth: Authenticator | None = None,
    ) -> None:
        self._client = client
        self.mount = mount
        self.addr = str(client.url)
        self._retry_for = retry_for
        self._auth = auth

    def _run(self, action: str, call: Callable[[], T], retry_for: timedelta | None = None) -> T:
        patience = (retry_for if retry_for is not None else self._retry_for).total_seconds()

        @retry(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_delay(patience) & stop_after_attempt(MIN_ATTEMPTS),  # both: time and tries
            wait=wait_exponential(multiplier=0.2, max=min(5.0, patience / MIN_ATTEMPTS)),  # quick tries fit the budget
            reraise=True,
        )
        def attempt() -> T:
            try:
                if self._auth is not None:
                    self._auth.ensure()
                try:
                    return call()
                except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
                    if self._auth is not None and self._auth.relogin():  # the login's token expired or was revoked
                        return call()
                    raise
            except KeyrotorError:
                raise
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as error:
                raise translate(error, action, self.addr) from None  # (requests' errors are OSErrors too)
            except (ValueError, OSError) as error:  # the login's settings (a missing file, no role id...)
                raise VaultError(f"cannot log in to Vault at {self.addr} to {action}: {error}") from None

        try:
            return attempt()
        except TransientError as error:
            raise VaultUnavailable(f"{error} (gave up after {patience:g}s and {MIN_ATTEMPTS} attempts)") from None

    def check(self, retry_for: timedelta | None = None) -> None:
        """Fail clearly, before anything changes, if Vault is unreachable, the token is bad or the mount is not KV
        version 2. ``retry_for`` bounds the retries of this first contact (default: the retry timeout)."""
        self._run("look up keyrotor's Vault token", self._client.auth.token.lookup_self, retry_for)
        try:
            mount = self._run(
                f"look up the KV mount {self.mount!r}",
                lambda: self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{self.mount}"),
                retry_for,
            )
        except VaultError as error:
            raise VaultError(
                f"Vault at {self.addr} has no KV mount {self.mount!r} usable with this token ({error})"
            ) from None
        data = mount.get("data", {}) if isinstance(mount, dict) else {}
        if data.get("type") not in ("kv", "generic") or str((data.get("options") or {}).get("version")) != "2":
            raise VaultError(
                f"Vault mount {self.mount!r} at {self.addr} is not a KV version 2 engine "
                f"(type={data.get('type')!r}, options={data.get('options')!r}); set KEYROTOR_VAULT_MOUNT"
            )

    def read(self, path: str, version: int | None = None) -> KVRecord | None:
        """The latest (or given) version at ``path``, or None when there is none or it was deleted."""

        def call() -> KVRecord | None:
            try:
                response = self._client.secrets.kv.v2.read_secret_version(
                    path=path, version=version, mount_point=self.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            metadata = response["data"]["metadata"]
            return KVRecord(response["data"]["data"] or {}, int(metadata["version"]), metadata["created_time"])

        return self._run(f"read {self.mount}/{path}", call)

    def current_version(self, path: str) -> int:
        """The path's current version, 0 when it never existed (the value check-and-set expects)."""

        def call() -> int:
            try:
                metadata = self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self.mount)
            except hvac.exceptions.InvalidPath:
                return 0
            return int(metadata["data"]["current_version"])

        return self._run(f"read metadata of {self.mount}/{path}", call)

    def write(self, path: str, data: dict[str, Any], cas: int | None) -> KVRecord:
        """Write a new version; with ``cas`` it only succeeds if the current version is ``cas`` (0: must not exist)."""

        def call() -> KVRecord:
            response = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=self.mount
            )
            return KVRecord(data, int(response["data"]["version"]), response["data"]["created_time"])

        return self._run(f"write {self.mount}/{path}", call)

    def keep_versions(self, path: str, count: int) -> None:
        """Keep up to ``count`` versions of ``path`` (KV keeps 10 by default)."""
        self._run(
            f"set max versions of {self.mount}/{path}",
            lambda: self._client.secrets.kv.v2.update_metadata(path=path, max_versions=count, mount_point=self.mount),
        )

    def destroy(self, path: str) -> None:
        """Remove every version and the metadata of ``path`` (used for the stashed, unpublished secret)."""
        self._run(
            f"destroy {self.mount}/{path}",
            lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=self.mount),
        )

    def list(self, path: str) -> list[str]:
        """Names under a folder, or an empty list when it has none."""

        def call() -> list[str]:
            try:
                response = self._client.secrets.kv.v2.list_secrets(path=path, mount_point=self.mount)
            except hvac.exceptions.InvalidPath:
                return []
            return list(response["data"]["keys"])

        return self._run(f"list {self.mount}/{path}", call)


def make_client(addr: str, token: str | None, namespace: str | None = None, timeout: float = 10.0) -> hvac.Client:
    """An hvac client with a bounded timeout, so an unreachable Vault fails instead of hanging."""
    return hvac.Client(url=addr, token=token, namespace=namespace, timeout=timeout)
