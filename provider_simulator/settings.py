"""Configuration, read from ``PAYSUITE_SIMULATOR_*`` environment variables."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.config import DEV_STRIPE_WEBHOOK_SECRET, DEV_WEBHOOK_SECRET

ENV_PREFIX = "PAYSUITE_SIMULATOR_"
WEBHOOK_SECRET_ENV = "PAYSUITE_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret

# DEVELOPMENT ONLY: the one publicly known secret the webhook adapter also falls back to, so a
# bare `make run` works. Anything reachable by others must set PAYSUITE_WEBHOOK_SECRET.
DEVELOPMENT_WEBHOOK_SECRET = DEV_WEBHOOK_SECRET
DEVELOPMENT_SECRETS = frozenset({DEV_WEBHOOK_SECRET, DEV_STRIPE_WEBHOOK_SECRET})

SignatureFormat = Literal["standard", "stripe"]


class SimulatorSettings(BaseSettings):
    """Validated at construction; ``load_settings`` turns failures into a readable message."""

    # validate_by_name lets tests pass ``webhook_secret=`` directly, while the environment only
    # ever supplies it through the shared, unprefixed variable.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, validate_by_name=True, validate_by_alias=True
    )

    # The instance's name: the gateway knows each configured provider by it, and it is the
    # last segment of the webhook URL.
    name: str = Field(default="sim-primary", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    listen_host: str = Field(default="127.0.0.1", min_length=1)
    listen_port: int = Field(default=8090, ge=0, le=65535)
    webhook_url: str = "http://127.0.0.1:8080/webhooks/sim-primary"
    signature_format: SignatureFormat = "standard"
    # The suite's own log settings (not PAYSUITE_SIMULATOR_*): one switch quiets every process.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias="PAYSUITE_LOG_LEVEL"
    )
    log_format: Literal["console", "json"] = Field(
        default="console", validation_alias="PAYSUITE_LOG_FORMAT"
    )
    # /metrics, on the suite's own variable like every other process (compose and k8s scrape
    # :9100); unset or 0: not served.
    metrics_port: int = Field(default=0, ge=0, le=65535, validation_alias="PAYSUITE_METRICS_PORT")
    metrics_host: str = Field(default="0.0.0.0", validation_alias="PAYSUITE_METRICS_HOST")
    # Spans go to this OTLP/HTTP collector when set, as the suite's (common.tracing).
    otlp_endpoint: str = Field(default="", validation_alias="PAYSUITE_OTLP_ENDPOINT")
    webhook_secret: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_WEBHOOK_SECRET), validation_alias=WEBHOOK_SECRET_ENV
    )
    # The variable its launcher set the secret from (`paysuite up` and compose give the
    # secondary simulator PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET as PAYSUITE_WEBHOOK_SECRET),
    # so a warning about the secret names the variable to change.
    signing_key_variable: str = Field(default=WEBHOOK_SECRET_ENV, pattern=r"^[A-Z][A-Z0-9_]*$")
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_initial_backoff_ms: int = Field(default=200, ge=0)
    # Deliveries run concurrently, like a real PSP's sender fleet, but no more than this many
    # at once: a flood of settlements must not open thousands of sockets.
    max_concurrent_deliveries: int = Field(default=64, ge=1)
    # Operations and events are kept in <data_dir>/<name>.jsonl and survive a restart.
    # None keeps them in memory only (unit tests).
    data_dir: Path | None = Path(".paysuite") / "simulator"
    # Seeds the chaos dice, so a chaos run can be repeated; None seeds from the OS.
    seed: int | None = None

    # The behaviour at start-up; every knob can be changed at run time (PATCH /_sim/config).
    settle_delay_ms: int = Field(default=300, ge=0)
    decline_rate: float = Field(default=0.0, ge=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_drop_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_delay_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_delay_ms: int = Field(default=2000, ge=0)
    webhook_reorder_rate: float = Field(default=0.0, ge=0, le=1)
    outage: bool = False

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _decodable_secret(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("signature_format") == "stripe":
            # Stripe signs with the secret's characters as the HMAC key: any non-empty value.
            if not value.get_secret_value():
                raise ValueError("must not be empty")
            return value
        # Checked here rather than left to standardwebhooks, which decodes leniently and would
        # otherwise fail (or silently sign with a different key) only when the first webhook goes.
        raw = value.get_secret_value().removeprefix("whsec_")
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except binascii.Error:
            raise ValueError("must be base64, optionally prefixed with 'whsec_'") from None
        if not key:
            raise ValueError("must not be empty")
        return value

    @property
    def uses_development_secret(self) -> bool:
        return self.webhook_secret.get_secret_value() in DEVELOPMENT_SECRETS


class SettingsError(Exception):
    """Bad configuration, with a message meant for the operator."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable to fix.

    Pydantic's own rendering echoes the rejected input, which would print the signing secret.
    """
    lines = ["invalid provider simulator configuration:"]
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        variable = name if name.startswith("PAYSUITE_") else ENV_PREFIX + name.upper()
        lines.append(f"  {variable}: {error['msg']}")
    return "\n".join(lines)


def load_settings() -> SimulatorSettings:
    try:
        return SimulatorSettings()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
