"""Settings for every paysuite process, from PAYSUITE_* environment variables.

One settings class for the suite keeps the configuration table in one place (README); each
process reads the fields it needs. Values are validated once, at start-up, by `load_settings`,
which turns pydantic's error into a short message naming the variable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only Standard Webhooks secret shared by the simulator and the webhook adapter.
# Deployments must set PAYSUITE_WEBHOOK_SECRET.
DEV_WEBHOOK_SECRET = "whsec_cGF5c3VpdGUtZGV2ZWxvcG1lbnQtd2ViaG9vay1zZWNyZXQ="  # noqa: S105 - public dev value
# Development-only secret of the second simulator, which signs in Stripe's format.
DEV_STRIPE_WEBHOOK_SECRET = "whsec_paysuite_development_stripe_format_secret"  # noqa: S105 - public dev value
DEV_SECRETS = frozenset({DEV_WEBHOOK_SECRET, DEV_STRIPE_WEBHOOK_SECRET})

ENDPOINTS_FILE = "endpoints.json"


class ConfigError(Exception):
    """The environment does not describe a runnable configuration."""


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYSUITE_", extra="ignore", frozen=True)

    # Server-level PostgreSQL URL; each service uses its own database on that server.
    # Unset: the embedded server started by `paysuite up` (found through data_dir).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".paysuite")
    # Prefix for the per-service database names (tests use it to isolate runs).
    database_prefix: str = Field(default="", pattern=r"^[a-z0-9_]*$")
    # Prefix for Redis stream names, for several suites (or test runs) sharing one Redis.
    stream_prefix: str = Field(default="", pattern=r"^[a-z0-9_.-]*$")

    payment_listen: str = "127.0.0.1:50051"
    wallet_listen: str = "127.0.0.1:50052"
    gateway_listen: str = "127.0.0.1:50053"
    webhook_listen: str = "127.0.0.1:8080"
    payment_target: str = "127.0.0.1:50051"
    wallet_target: str = "127.0.0.1:50052"
    gateway_target: str = "127.0.0.1:50053"

    provider_url: str = "http://127.0.0.1:8090"
    provider_timeout_ms: int = Field(default=2000, gt=0)
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)

    # Deadline for calls between our own services.
    rpc_timeout_ms: int = Field(default=5000, gt=0)
    relay_batch_size: int = Field(default=200, gt=0, le=10_000)
    relay_poll_interval_ms: int = Field(default=1000, gt=0)
    consumer_block_ms: int = Field(default=1000, gt=0)
    consumer_claim_idle_ms: int = Field(default=30_000, gt=0)
    consumer_max_deliveries: int = Field(default=10, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    _check_listen = field_validator(
        "payment_listen",
        "wallet_listen",
        "gateway_listen",
        "webhook_listen",
        "payment_target",
        "wallet_target",
        "gateway_target",
    )(_address)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("expected a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    def require_database_url(self) -> str:
        return self.database_url or self._embedded("database_url")

    def require_redis_url(self) -> str:
        return self.redis_url or self._embedded("redis_url")

    def _embedded(self, key: str) -> str:
        path = self.data_dir / ENDPOINTS_FILE
        try:
            value = json.loads(path.read_text())[key]
        except (OSError, ValueError, KeyError):
            raise ConfigError(
                f"PAYSUITE_{key.upper()} is not set and no embedded server is running "
                f"({path} not found): start the suite with `make run`, or set the variable"
            ) from None
        return str(value)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  PAYSUITE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
