"""keyrotor logs in to OpenBao with AppRole and with a JWT (as a Kubernetes pod or an OIDC workload does), with
tokens that expire within seconds: the login is renewed, then done again, and nothing notices."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.vault import VaultKV
from tests.conftest import OUTPUT, ROOT
from tests.helpers import keyrotor_cli
from tests.integration.support import Runner, active_keys, assert_rotated, start_rotation, state_of, wait_for

pytestmark = pytest.mark.integration

ISSUER = "https://issuer.keyrotor.test"
SHORT = {"token_ttl": "3s", "token_max_ttl": "6s"}  # renewed once or twice, then a new login is needed


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    """An RS256 JWT, as an identity provider (or Kubernetes' service-account issuer) signs it."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.fixture(scope="module")
def logins(stack_environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """AppRole and JWT auth enabled on the session's OpenBao, each with a role bound to keyrotor's Vault policy;
    returns the environment of each login (VAULT_TOKEN removed)."""
    root = hvac.Client(url=stack_environ["VAULT_ADDR"], token=stack_environ["VAULT_TOKEN"])
    root.sys.create_or_update_policy("keyrotor", (ROOT / "policies" / "vault-policy.hcl").read_text())
    enabled = root.sys.list_auth_methods()["data"]
    folder = OUTPUT / "vault-logins"
    folder.mkdir(parents=True, exist_ok=True)

    if "approle/" not in enabled:
        root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("keyrotor", token_policies=["keyrotor"], **SHORT)
    role_id = root.auth.approle.read_role_id("keyrotor")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("keyrotor")["data"]["secret_id"]
    (folder / "secret-id").write_text(secret_id)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if "jwt/" not in enabled:
        root.sys.enable_auth_method("jwt")
    root.write("auth/jwt/config", jwt_validation_pubkeys=[public.decode()], bound_issuer=ISSUER)
    root.write(
        "auth/jwt/role/keyrotor",
        role_type="jwt",
        user_claim="sub",
        bound_audiences=["keyrotor"],
        token_policies=["keyrotor"],
        **SHORT,
    )
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "system:serviceaccount:keyrotor:keyrotor",
        "aud": "keyrotor",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 3600,
    }
    (folder / "token.jwt").write_text(signed_jwt(key, claims))

    base = {k: v for k, v in stack_environ.items() if k not in ("VAULT_TOKEN", "BAO_TOKEN")}
    return {
        "approle": base
        | {
            "KEYROTOR_VAULT_AUTH": "approle",
            "KEYROTOR_VAULT_ROLE_ID": role_id,
            "KEYROTOR_VAULT_SECRET_ID_FILE": str(folder / "secret-id"),
        },
        "jwt": base
        | {
            "KEYROTOR_VAULT_AUTH": "jwt",
            "KEYROTOR_VAULT_ROLE": "keyrotor",
            "KEYROTOR_VAULT_JWT_FILE": str(folder / "token.jwt"),
        },
    }


@pytest.mark.parametrize("method", ["approle", "jwt"])
def test_a_rotation_with_each_login_method(
    method: str, logins: dict[str, dict[str, str]], iam: Any, connections: Connections, user_factory: Callable[..., str]
) -> None:
    user = user_factory(f"login-{method}")
    old = active_keys(iam, user)[0]
    result = keyrotor_cli(logins[method], "rotate", user, "--local", "--quiet-period", "4s", "--poll-interval", "1s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_rotated(iam, connections, user, old)


@pytest.mark.parametrize("method", ["approle", "jwt"])
def test_a_login_outlives_its_token(
    method: str, logins: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens live 3 s (at most 6 s with renewals): keyrotor reads Vault for 8 s, renewing, then logging in again."""
    from keyrotor.settings import Settings

    for name, value in logins[method].items():
        if name.startswith(("KEYROTOR_", "VAULT_")):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    connections = Connections.from_settings(Settings())
    tokens = set()
    started = time.monotonic()
    while time.monotonic() - started < 8:
        connections.kv.check()
        connections.kv.list("keyrotor")
        assert isinstance(connections.kv, VaultKV)
        tokens.add(connections.kv._client.token)  # noqa: SLF001 - which token each call used
        time.sleep(1)
    assert len(tokens) >= 2, "the login was done again once its token could no longer be renewed"


def test_a_missing_login_file_is_a_clear_vault_error(
    logins: dict[str, dict[str, str]], iam: Any, user_factory: Callable[..., str]
) -> None:
    user = user_factory("login-missing")
    env = logins["jwt"] | {"KEYROTOR_VAULT_JWT_FILE": str(Path(OUTPUT) / "no-such.jwt")}
    result = keyrotor_cli(env, "rotate", user, "--local")
    assert result.returncode == 7, result.stderr[-2000:]
    assert "cannot log in to Vault" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_a_waiting_rotation_is_woken_after_the_waker_s_token_expired(
    logins: dict[str, dict[str, str]],
    own_server: dict[str, str],
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
) -> None:
    """The waker and the runs of a `keyrotor serve` that logs in with AppRole (3 s tokens): the rotation waits
    8 s, the waker's token expires between its looks, and the rotation is still woken."""
    user = user_factory("login-wake")
    old = active_keys(iam, user)[0]
    env = logins["approle"] | {"PREFECT_API_URL": own_server["PREFECT_API_URL"]}
    runner = Runner(env, "runner-approle")
    try:
        run_id = start_rotation(env, user, quiet_period="8s")
        wait_for(lambda: connections.waiting.read(connections.account_id, user), "the rotation to park")
        wait_for(lambda: state_of(env, run_id).is_final(), "the rotation to be woken and finish", timeout=120)
    finally:
        runner.stop()
    assert state_of(env, run_id).is_completed(), state_of(env, run_id)
    assert_rotated(iam, connections, user, old)
