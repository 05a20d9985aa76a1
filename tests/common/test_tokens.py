"""Token verification: every way a token can be wrong is UNAUTHENTICATED, the right ones give
their principal, and no algorithm other than the configured key's is ever accepted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from common.auth import Principal, Role
from common.config import DEV_AUTH_SECRET, ConfigError, Settings
from common.errors import Unauthenticated
from common.tokens import ServiceToken, TokenVerifier, ensure_signing_key, mint, with_local_key

SECRET = "s" * 64


def settings(**values: Any) -> Settings:
    return Settings(**{"auth_secret": SecretStr(SECRET), **values})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "aud": "paysuite", "exp": now + 60, "iat": now, **changes}


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def test_a_good_token_is_its_principal_with_its_roles() -> None:
    verifier = TokenVerifier.from_settings(settings())
    assert verifier.verify(hs256()) == Principal("alice", frozenset({Role.USER}))
    assert verifier.verify(hs256(roles=["operator", "user", "root"])).roles == {
        Role.OPERATOR,
        Role.USER,
    }
    assert verifier.verify(hs256(role="service")).is_service


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (hs256(exp=int(time.time()) - 120), "expired"),
        (hs256(aud="someone-else"), "not meant for this service"),
        (jwt.encode(claims(), "t" * 40, algorithm="HS256"), "does not verify"),
        (jwt.encode(claims(), SECRET, algorithm="HS512"), "does not verify"),
        (jwt.encode(claims(), None, algorithm="none"), "does not verify"),
        (hs256()[:-3] + "abc", "does not verify"),
        ("not-a-jwt", "does not verify"),
        (jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET), "not verify"),
        (jwt.encode({k: v for k, v in claims().items() if k != "sub"}, SECRET), "not verify"),
        (hs256(sub="x" * 200), "subject"),
        (hs256(roles={"not": "a list"}), "roles"),
    ],
    ids=[
        "expired",
        "audience",
        "other-key",
        "other-algorithm",
        "alg-none",
        "tampered",
        "garbage",
        "no-exp",
        "no-sub",
        "long-subject",
        "roles-not-a-list",
    ],
)
def test_a_bad_token_is_unauthenticated_saying_why(token: str, says: str) -> None:
    with pytest.raises(Unauthenticated, match=says):
        TokenVerifier.from_settings(settings()).verify(token)


def test_the_issuer_is_checked_when_configured() -> None:
    verifier = TokenVerifier.from_settings(settings(auth_issuer="https://idp"))
    with pytest.raises(Unauthenticated):
        verifier.verify(hs256())
    assert verifier.verify(hs256(iss="https://idp")).subject == "alice"


def test_a_verified_token_is_cached_until_it_expires() -> None:
    now = [time.time()]
    looked_up: list[str] = []
    keys = TokenVerifier.from_settings(settings())._keys

    def counting(token: str) -> Any:
        looked_up.append(token)
        return keys(token)

    verifier = TokenVerifier(counting, audience="paysuite", leeway_s=0, clock=lambda: now[0])
    token = hs256(exp=int(now[0]) + 10)
    verifier.verify(token)
    verifier.verify(token)
    assert len(looked_up) == 1  # the second time from the cache
    now[0] += 60
    verifier.verify(token)  # past its expiry by the clock: verified again, not cached
    assert len(looked_up) == 2


def _rsa_pem(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, path


def test_rs256_with_a_public_key_and_no_algorithm_confusion(tmp_path: Path) -> None:
    key, path = _rsa_pem(tmp_path)
    verifier = TokenVerifier.from_settings(Settings(auth_public_key_file=path))
    assert verifier.verify(jwt.encode(claims(), key, algorithm="RS256")).subject == "alice"
    # HS256 signed with the public key's bytes: the classic confusion attack.
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode(claims(), "x" * 40, algorithm="HS256"))


def test_es256_with_a_public_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = TokenVerifier.from_settings(Settings(auth_public_key_file=path))
    assert verifier.verify(jwt.encode(claims(), key, algorithm="ES256")).subject == "alice"


def test_a_jwks_file_picks_the_key_by_kid(tmp_path: Path) -> None:
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, key, alg in (("k1", first, "RS256"), ("k2", second, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    verifier = TokenVerifier.from_settings(Settings(auth_jwks_file=path))

    for kid, key, alg in (("k1", first, "RS256"), ("k2", second, "ES256")):
        token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
        assert verifier.verify(token).subject == "alice"
    # Signed by the first key but naming the second: the second key does not verify it.
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode(claims(), first, algorithm="RS256", headers={"kid": "k2"}))
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode(claims(), first, algorithm="RS256", headers={"kid": "k9"}))


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({}, "exactly one of"),
        ({"auth_secret": SecretStr("short")}, "at least 32 bytes"),
        ({"auth_secret": SecretStr(DEV_AUTH_SECRET)}, "public development secret"),
        ({"auth_secret": SecretStr(SECRET), "auth_jwks_file": Path("x")}, "exactly one of"),
        ({"auth_public_key_file": Path("/nonexistent.pem")}, "cannot read"),
    ],
)
def test_a_bad_key_configuration_is_a_config_error(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        TokenVerifier.from_settings(Settings(**values))


def test_the_development_secret_is_accepted_only_when_allowed() -> None:
    allowed = Settings(auth_secret=SecretStr(DEV_AUTH_SECRET), allow_dev_secrets=True)
    TokenVerifier.from_settings(allowed)


def test_a_service_token_is_minted_renewed_or_given() -> None:
    minted = ServiceToken(settings(), "payment-service")
    principal = TokenVerifier.from_settings(settings()).verify(minted())
    assert principal == Principal("service:payment-service", frozenset({Role.SERVICE}))
    assert minted() == minted()  # the same until it nears its expiry

    given = ServiceToken(Settings(service_token=SecretStr("given")), "x")
    assert given() == "given"
    with pytest.raises(ConfigError):
        ServiceToken(Settings(), "x")


def test_the_data_folders_key_is_made_once_and_private(tmp_path: Path) -> None:
    secret = ensure_signing_key(tmp_path)
    assert ensure_signing_key(tmp_path) == secret
    assert (tmp_path / "auth.secret").stat().st_mode & 0o777 == 0o600
    local = with_local_key(Settings(data_dir=tmp_path))
    token = mint(secret.encode(), subject="bob", roles=[Role.USER], audience="paysuite", ttl_s=60)
    assert TokenVerifier.from_settings(local).verify(token).subject == "bob"
    with pytest.raises(ConfigError, match="make run"):
        with_local_key(Settings(data_dir=tmp_path / "elsewhere"))
