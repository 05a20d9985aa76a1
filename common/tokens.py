"""Bearer tokens: JWTs verified with one configured key source, and minted for development
and for our own services. PyJWT does the cryptography and the claim checks.

Key sources (exactly one; PAYSUITE_AUTH_*):
- SECRET: a shared HS256 secret. The embedded default (`paysuite up` makes one per data
  folder) and small deployments; whoever holds it can mint tokens.
- PUBLIC_KEY_FILE: a PEM public key, RSA (RS256) or EC P-256 (ES256); tokens are minted by an
  identity provider that holds the private key.
- JWKS_FILE: a JSON Web Key Set (RS256/ES256 keys chosen by `kid`), for key rotation.

Only the algorithms of the configured key are accepted, never `none` and never HS256 with a
public key (algorithm confusion). Tokens must carry `sub`, `exp` and our audience, and the
issuer when one is configured. Verified tokens are cached until they expire, so a caller
re-sending the same token costs one dictionary look-up, not a signature check.

Claims: `sub` is the principal; `roles` (a list) or `role` names its roles (user when absent).

Service identity: each service presents a service token to its peers (`roles: [service]`).
With a SECRET the process mints its own, short-lived, and renews it; with public keys it is
given one (PAYSUITE_SERVICE_TOKEN) by whoever mints tokens. We chose tokens over mTLS: one
mechanism for users and services, no certificate authority to run for the embedded suite,
and Kubernetes NetworkPolicies already restrict who can reach which port.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import SecretStr

from common.auth import Principal, Role
from common.config import DEV_SECRETS, SIGNING_KEY_FILE, ConfigError, Settings
from common.errors import Unauthenticated

MIN_SECRET_BYTES = 32
MAX_TOKEN_BYTES = 8192
MAX_SUBJECT_LENGTH = 128
SERVICE_TOKEN_TTL_S = 3600
# A minted service token is renewed once less than this is left of it.
RENEW_BEFORE_S = 600

TokenSource = Callable[[], str]


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any
    algorithms: tuple[str, ...]


class TokenVerifier:
    def __init__(
        self,
        keys: Callable[[str], _Key],
        *,
        audience: str,
        issuer: str = "",
        leeway_s: float = 30.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            key_source(settings),
            audience=settings.auth_audience,
            issuer=settings.auth_issuer,
            leeway_s=settings.auth_leeway_s,
        )

    def verify(self, token: str) -> Principal:
        """The token's principal, or Unauthenticated saying (safely) what is wrong with it."""
        cached = self._cache.get(token)
        if cached is not None and cached[1] + self._leeway_s > self._clock():
            self._cache.move_to_end(token)
            return cached[0]
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("the bearer token is too long")
        try:
            key = self._keys(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self._audience,
                issuer=self._issuer or None,
                leeway=self._leeway_s,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise Unauthenticated("the bearer token is not meant for this service") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token does not verify") from None
        principal = _principal(claims)
        self._cache[token] = (principal, float(claims["exp"]))
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal


def _principal(claims: dict[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise Unauthenticated("the bearer token's subject is missing or too long")
    named = claims.get("roles", claims.get("role", Role.USER.value))
    if isinstance(named, str):
        named = [named]
    if not isinstance(named, list):
        raise Unauthenticated("the bearer token's roles are not a list")
    roles = frozenset(Role(r) for r in named if r in Role.__members__.values())
    return Principal(subject, roles or frozenset({Role.USER}))


def key_source(settings: Settings) -> Callable[[str], _Key]:
    """The verification key for a token, from the one configured source."""
    configured = [
        name
        for name, value in (
            ("PAYSUITE_AUTH_SECRET", settings.auth_secret),
            ("PAYSUITE_AUTH_PUBLIC_KEY_FILE", settings.auth_public_key_file),
            ("PAYSUITE_AUTH_JWKS_FILE", settings.auth_jwks_file),
        )
        if value is not None
    ]
    if len(configured) != 1:
        raise ConfigError(
            "access control needs exactly one of PAYSUITE_AUTH_SECRET,"
            " PAYSUITE_AUTH_PUBLIC_KEY_FILE or PAYSUITE_AUTH_JWKS_FILE"
            + (f" (got {', '.join(configured)})" if configured else "")
        )
    if settings.auth_secret is not None:
        fixed = _Key(hs256_secret(settings), ("HS256",))
        return lambda _token: fixed
    if settings.auth_public_key_file is not None:
        fixed = _public_key(_read(settings.auth_public_key_file, "PAYSUITE_AUTH_PUBLIC_KEY_FILE"))
        return lambda _token: fixed
    assert settings.auth_jwks_file is not None
    return _jwks(_read(settings.auth_jwks_file, "PAYSUITE_AUTH_JWKS_FILE"))


def hs256_secret(settings: Settings) -> bytes:
    if settings.auth_secret is None:
        raise ConfigError("PAYSUITE_AUTH_SECRET is not set: tokens cannot be minted here")
    secret = settings.auth_secret.get_secret_value().encode()
    if secret.decode() in DEV_SECRETS and not settings.allow_dev_secrets:
        raise ConfigError(
            "PAYSUITE_AUTH_SECRET is the public development secret: set one of your own, or"
            " PAYSUITE_ALLOW_DEV_SECRETS=true for development"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"PAYSUITE_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None


def _public_key(pem: bytes) -> _Key:
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise ConfigError("PAYSUITE_AUTH_PUBLIC_KEY_FILE is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return _Key(key, ("RS256",))
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return _Key(key, ("ES256",))
    raise ConfigError("PAYSUITE_AUTH_PUBLIC_KEY_FILE must hold an RSA or EC P-256 public key")


ASYMMETRIC = frozenset({"RS256", "ES256"})


def _jwks(document: bytes) -> Callable[[str], _Key]:
    try:
        keys = jwt.PyJWKSet.from_json(document.decode()).keys
    except (jwt.PyJWTError, ValueError, UnicodeDecodeError):
        raise ConfigError("PAYSUITE_AUTH_JWKS_FILE is not a JSON Web Key Set") from None
    by_kid: dict[str, _Key] = {}
    for jwk in keys:
        algorithm = jwk.algorithm_name
        if algorithm in ASYMMETRIC and jwk.key_id and jwk.public_key_use in (None, "sig"):
            by_kid[jwk.key_id] = _Key(jwk, (algorithm,))
    if not by_kid:
        raise ConfigError("PAYSUITE_AUTH_JWKS_FILE has no RS256/ES256 signing key with a kid")

    def key_for(token: str) -> _Key:
        kid = jwt.get_unverified_header(token).get("kid")
        key = by_kid.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidKeyError("no key for this kid")
        return key

    return key_for


def mint(
    secret: bytes,
    *,
    subject: str,
    roles: Iterable[Role],
    audience: str,
    issuer: str = "",
    ttl_s: int,
    now: float | None = None,
) -> str:
    """An HS256 token (development, and services sharing the secret)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": sorted(role.value for role in roles),
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


def mint_for(settings: Settings, *, subject: str, roles: Sequence[Role], ttl_s: int = 3600) -> str:
    return mint(
        hs256_secret(settings),
        subject=subject,
        roles=roles,
        audience=settings.auth_audience,
        issuer=settings.auth_issuer,
        ttl_s=ttl_s,
    )


class ServiceToken:
    """The token a process presents to its peers: the configured one, or one it mints itself
    from the shared secret and renews before it expires."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._fixed = settings.service_token.get_secret_value() if settings.service_token else None
        if self._fixed is None:
            hs256_secret(settings)  # ConfigError now, not at the first call
        self._settings = settings
        self._subject = f"service:{service}"
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        if self._fixed is not None:
            return self._fixed
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_for(
                self._settings,
                subject=self._subject,
                roles=(Role.SERVICE,),
                ttl_s=SERVICE_TOKEN_TTL_S,
            )
            self._renew_at = now + SERVICE_TOKEN_TTL_S - RENEW_BEFORE_S
        return self._token


def ensure_signing_key(data_dir: Path) -> str:
    """The data folder's HS256 secret, made (readable by its owner only) on first use: the
    embedded suite's key, which `paysuite up` gives its processes and the CLI mints with."""
    path = data_dir / SIGNING_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        secret = secrets.token_urlsafe(48)
        out.write(secret)
    return secret


def with_local_key(settings: Settings) -> Settings:
    """`settings` able to verify and mint tokens: as configured, or with the data folder's
    key when no key source is configured (the embedded suite)."""
    if any(
        value is not None
        for value in (settings.auth_secret, settings.auth_public_key_file, settings.auth_jwks_file)
    ):
        return settings
    path = settings.data_dir / SIGNING_KEY_FILE
    try:
        secret = path.read_text().strip()
    except OSError:
        raise ConfigError(
            f"no token-signing key ({path} not found): start the suite with `make run`,"
            " set PAYSUITE_AUTH_SECRET, or give a token in PAYSUITE_TOKEN"
        ) from None
    return settings.model_copy(update={"auth_secret": SecretStr(secret)})
