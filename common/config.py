"""Settings for every paysuite process, from PAYSUITE_* environment variables.

One settings class for the suite keeps the configuration table in one place (README); each
process reads the fields it needs. Values are validated once, at start-up, by `load_settings`,
which turns pydantic's error into a short message naming the variable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.events import event_type_patterns

# Development-only Standard Webhooks secret shared by the simulator and the webhook adapter.
# Deployments must set PAYSUITE_WEBHOOK_SECRET.
DEV_WEBHOOK_SECRET = "whsec_cGF5c3VpdGUtZGV2ZWxvcG1lbnQtd2ViaG9vay1zZWNyZXQ="  # noqa: S105 - public dev value
# Development-only secret of the second simulator, which signs in Stripe's format.
DEV_STRIPE_WEBHOOK_SECRET = "whsec_paysuite_development_stripe_format_secret"  # noqa: S105 - public dev value
# Development-only token-signing secret of docker-compose.dev.yml (`paysuite up` makes a random
# one per data folder instead).
DEV_AUTH_SECRET = "paysuite-development-token-signing-secret-not-for-production"  # noqa: S105 - public dev value
DEV_SECRETS = frozenset({DEV_WEBHOOK_SECRET, DEV_STRIPE_WEBHOOK_SECRET, DEV_AUTH_SECRET})
SIGNING_KEY_FILE = "auth.secret"

ENDPOINTS_FILE = "endpoints.json"


class ConfigError(Exception):
    """The environment does not describe a runnable configuration."""


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


_TARGET_SCHEMES = ("ipv4:", "ipv6:", "dns:", "unix:")


def _target(value: str) -> str:
    """A gRPC target: HOST:PORT, or a name-resolver target gRPC understands, such as
    `ipv4:10.0.0.1:50052,10.0.0.2:50052` (every replica, the channel balancing over them) or
    `dns:///wallet:50052` (a Kubernetes headless Service: every pod behind the name)."""
    if value.startswith(_TARGET_SCHEMES):
        scheme, _, rest = value.partition(":")
        addresses = rest.removeprefix("///") if scheme == "dns" else rest
        if scheme in ("ipv4", "ipv6"):
            for address in addresses.split(","):
                _address(address)
        elif not addresses:
            raise ValueError(f"expected {scheme}:ADDRESS, got {value!r}")
        return value
    return _address(value)


SignatureFormat = Literal["standard", "stripe"]


class ProviderConfig(BaseModel):
    """One payment provider instance the gateway routes to and the webhook adapter hears from.

    Listed in failover order in PAYSUITE_PROVIDERS (JSON), e.g.
    `[{"name": "sim-primary", "url": "http://sim1:8090", "signature_format": "standard",
       "webhook_secrets": ["whsec_..."]}]`. Two secrets at once is a rotation in progress.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    url: str
    signature_format: SignatureFormat = "standard"
    webhook_secrets: tuple[SecretStr, ...] = Field(min_length=1, max_length=4)


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

    # This replica's identity, stable across its restarts (`paysuite up` names each process;
    # Kubernetes passes the pod name): its stream consumers are named after it, so a restarted
    # replica takes over the entries its predecessor left pending at once. Unset:
    # <hostname>-<pid>, which a restart does not keep. Two live replicas must never share one.
    replica_name: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,199})?$")

    payment_listen: str = "127.0.0.1:50051"
    wallet_listen: str = "127.0.0.1:50052"
    gateway_listen: str = "127.0.0.1:50053"
    webhook_listen: str = "127.0.0.1:8080"
    payment_target: str = "127.0.0.1:50051"
    wallet_target: str = "127.0.0.1:50052"
    gateway_target: str = "127.0.0.1:50053"
    # Wallet processes `paysuite up` (and the bench, soak and chaos suites) starts, each on its
    # own port (the first on wallet_listen), metrics port and replica name; the payment service
    # and the recovery worker then balance their wallet calls over all of them (round robin).
    # Deployments scale the wallet with their own replica count instead.
    wallet_replicas: int = Field(default=1, ge=1, le=16)

    provider_url: str = "http://127.0.0.1:8090"
    provider_timeout_ms: int = Field(default=2000, gt=0)
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    # The secret being rotated out, accepted beside webhook_secret until it is removed.
    webhook_previous_secret: SecretStr | None = None
    # The second simulator instance (Stripe-format signatures), the failover target.
    provider_secondary_url: str = "http://127.0.0.1:8091"
    provider_secondary_webhook_secret: SecretStr = SecretStr(DEV_STRIPE_WEBHOOK_SECRET)
    # Overrides the two simulator instances above with any list of providers (JSON).
    providers: tuple[ProviderConfig, ...] = ()
    # The public development secrets are refused unless this is set (`paysuite up` sets it).
    allow_dev_secrets: bool = False

    # Access control (common.tokens): exactly one key source verifies callers' bearer tokens.
    # Unset everywhere: `paysuite up` passes its data folder's secret to its processes.
    auth_secret: SecretStr | None = None
    auth_public_key_file: Path | None = None
    auth_jwks_file: Path | None = None
    auth_audience: str = Field(default="paysuite", min_length=1)
    auth_issuer: str = ""
    auth_leeway_s: float = Field(default=30.0, ge=0, le=300)
    # The token this process presents to the other services (role service). Unset with a
    # shared secret: the process mints its own.
    service_token: SecretStr | None = None

    provider_attempts: int = Field(default=3, ge=1, le=10)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_call_rate: float = Field(default=1.0, gt=0, le=1)
    breaker_slow_call_ms: int = Field(default=2000, gt=0)
    breaker_window_s: float = Field(default=30.0, gt=0)
    breaker_minimum_calls: int = Field(default=10, ge=1)
    breaker_reset_timeout_ms: int = Field(default=5000, gt=0)
    breaker_half_open_calls: int = Field(default=3, ge=1)
    # SyncOperation fails an operation its provider has never heard of only once it is older.
    sync_not_found_grace_ms: int = Field(default=60_000, ge=0)

    # Webhook adapter: signature timestamp tolerance, body limit, and how many signature
    # failures per second may trigger a status sync of the operation they name.
    webhook_tolerance_s: int = Field(default=300, gt=0)
    webhook_max_body_bytes: int = Field(default=64 * 1024, gt=0)
    webhook_sync_per_s: float = Field(default=5.0, ge=0)
    # How long a webhook is held, sent again as soon as the gateway is back, while the gateway
    # is unavailable (a restart), before it is answered 503 for the provider to retry.
    webhook_hold_ms: int = Field(default=8000, ge=0)

    # Deadline for calls between our own services.
    rpc_timeout_ms: int = Field(default=5000, gt=0)
    # A gRPC server closes (GOAWAY) each client connection this long after it opened, and the
    # client dials again after resolving the name anew: behind a Kubernetes headless Service
    # (`dns:///wallet:50052`) that is how callers find the replicas added since they
    # connected. Calls in flight finish, streams too; 0: connections live as long as clients
    # keep them (one process per target, as `paysuite up` runs them).
    grpc_max_connection_age_s: int = Field(default=0, ge=0)
    relay_batch_size: int = Field(default=500, gt=0, le=10_000)
    relay_poll_interval_ms: int = Field(default=1000, gt=0)
    # How long a relay woken by a commit waits for more commits before it claims their rows
    # (design.md §5: a stage takes what arrived within T ms): fewer claim transactions, each
    # event this much later on its stream; 0 claims at once. Measured in eight interleaved
    # bench runs (README, Configuration): at 5 ms, 6-10 % fewer transactions per deposit and
    # about 5 % less CPU, for 4-11 ms more from webhook to `completed` at p50.
    relay_linger_ms: int = Field(default=5, ge=0, le=1000)
    # Published outbox rows are kept this long (for forensics), then purged.
    outbox_retention_s: int = Field(default=86_400, ge=0)
    # Stream entries every consumer group has acknowledged are trimmed after this long; their
    # history stays in the outbox table (outbox_retention_s). Two minutes bound Redis memory
    # by the event rate: about 140 MB at 250 deposits/s (see the README's memory budget).
    stream_retention_s: int = Field(default=120, ge=0)
    # The oldest unpublished outbox row unchanged and this old while PostgreSQL and Redis
    # answer: the outbox is stalled (readiness NOT_SERVING; `paysuite outbox status` says so).
    outbox_stalled_after_s: int = Field(default=60, gt=0)
    consumer_block_ms: int = Field(default=1000, gt=0)
    # A consumer renews a heartbeat key of this lifetime every third of it; another consumer
    # claims an entry only once it has been idle this long AND its owner's heartbeat is gone,
    # so a live consumer, however slow, is never robbed (common/streams.py).
    consumer_claim_idle_ms: int = Field(default=5_000, gt=0)
    consumer_max_deliveries: int = Field(default=10, gt=0)
    # Entries one consumer handles at once (different aggregates; one aggregate is serial).
    # Each holds a database connection only while its transaction is open.
    consumer_concurrency: int = Field(default=16, gt=0, le=1024)
    # Connections per service process, shared by its consumers, relay and gRPC requests;
    # sized so a service's consumers at full concurrency still leave room for requests
    # (the pool may grow by half again in a burst).
    db_pool_size: int = Field(default=16, gt=0, le=200)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # Payments: how long an idempotency key is remembered (then a reuse makes a new payment).
    idempotency_retention_h: int = Field(default=72, gt=0)
    # Payments: a saga unchanged this long in `initiated` or `refunding` is resumed from its
    # recovery point (a process died between two steps, or an event was lost).
    saga_resume_after_s: float = Field(default=30.0, gt=0)
    # Payments: a manual-review case open longer than this is overdue (flagged in listings,
    # logged as a warning at most once an hour).
    review_sla_s: float = Field(default=4 * 3600.0, gt=0)

    # Payments, admission control (common/admission.py): create calls answer RESOURCE_EXHAUSTED
    # with a RetryInfo of about admission_retry_after_ms while more than this many stream
    # entries wait (lag + pending) on the groups that drive payments; 0: never. Meant to sit
    # above what a complete loop of 32 clients leaves waiting (at most a few entries per
    # payment in flight) and below what creates outrunning completions pile up in seconds.
    admission_max_backlog: int = Field(default=200, ge=0)
    # ... and while the oldest entry not yet delivered to one of those groups has waited longer
    # than this (the queueing delay a new payment would meet); 0: never. Bounds create →
    # completed under overload at about this plus a second, however fast the suite is.
    admission_max_queued_ms: int = Field(default=750, ge=0)
    admission_retry_after_ms: int = Field(default=500, gt=0)
    # Payments: per-caller token buckets by role, "ROLE=PER_S:BURST,..." (roles: user, operator,
    # service), e.g. "user=200:400,operator=50:100". A role not listed is unlimited, and so is a
    # caller with any unlisted role. Over it: RESOURCE_EXHAUSTED with the wait for a token.
    rate_limits: str = ""

    # Wallet: limits checked before anything is written (minor units of any currency), how
    # many events an account gets between snapshots, how often expired holds are swept.
    wallet_max_operation_minor: int = Field(default=2**63 - 1, gt=0, le=2**63 - 1)
    wallet_max_balance_minor: int = Field(default=2**63 - 1, gt=0, le=2**63 - 1)
    wallet_snapshot_every: int = Field(default=10, gt=0)
    wallet_hold_sweep_interval_ms: int = Field(default=1000, gt=0)
    # Wallet: the account event types it publishes on paysuite.wallet.events, as
    # comma-separated patterns ("account.*", "account.credited,account.debited"). Default none:
    # no process of the suite subscribes (wallet_service/adapters/event_mapping.py says why).
    wallet_published_events: str = ""

    # Recovery worker: how often it sweeps, when a payment counts as stuck (seed 004: every
    # 5 minutes, refunds stuck for 30), when a consumer's pending entry counts as stalled, and
    # how long one sweep's lease lasts unless renewed (a dead worker's lease frees itself).
    recovery_listen: str = "127.0.0.1:50054"
    recovery_interval_s: float = Field(default=300.0, gt=0)
    recovery_pending_after_s: float = Field(default=60.0, gt=0)
    recovery_refunding_after_s: float = Field(default=1800.0, gt=0)
    recovery_stalled_after_s: float = Field(default=300.0, gt=0)
    recovery_lease_s: float = Field(default=60.0, ge=1)
    # Reconciliation (payments vs ledger vs provider): how often it runs, whatever the round
    # interval, and how far back it looks at most (it resumes from its high-water mark).
    recovery_reconcile_every_s: float = Field(default=300.0, gt=0)
    recovery_reconcile_window_s: float = Field(default=3600.0, gt=0)
    # /metrics of this process (Prometheus). Unset or 0: not served; containers use 9100 for
    # every process. `paysuite up` gives each of its processes a free port of its own.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    # OTLP/HTTP collector base URL (http://collector:4318) spans are exported to; unset: trace
    # ids are still made and propagated (they are in every log line), nothing is exported.
    otlp_endpoint: str = ""

    _check_listen = field_validator(
        "payment_listen",
        "wallet_listen",
        "gateway_listen",
        "webhook_listen",
        "recovery_listen",
    )(_address)
    _check_target = field_validator("payment_target", "wallet_target", "gateway_target")(_target)

    @field_validator("wallet_published_events")
    @classmethod
    def _published_events(cls, value: str) -> str:
        event_type_patterns(value)
        return value

    def wallet_published_event_patterns(self) -> tuple[str, ...]:
        return event_type_patterns(self.wallet_published_events)

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        parse_rate_limits(value)
        return value

    def rate_limit_table(self) -> dict[str, tuple[float, float]]:
        """PAYSUITE_RATE_LIMITS as {role: (tokens per second, burst)}."""
        return parse_rate_limits(self.rate_limits)

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

    def provider_configs(self) -> tuple[ProviderConfig, ...]:
        """The providers in failover order: PAYSUITE_PROVIDERS, or the two simulators."""
        if self.providers:
            return self.providers
        primary = [self.webhook_secret]
        if self.webhook_previous_secret is not None:
            primary.append(self.webhook_previous_secret)
        return (
            ProviderConfig(
                name="sim-primary", url=self.provider_url, webhook_secrets=tuple(primary)
            ),
            ProviderConfig(
                name="sim-secondary",
                url=self.provider_secondary_url,
                signature_format="stripe",
                webhook_secrets=(self.provider_secondary_webhook_secret,),
            ),
        )

    def webhook_secret_variable(self, provider: str) -> str:
        """The variable an operator sets to give `provider` (one of `provider_configs`) its
        webhook secret: launchers pass it on to a simulator, which names it in its warnings."""
        if self.providers:
            return "PAYSUITE_PROVIDERS"
        if provider == "sim-primary":
            return "PAYSUITE_WEBHOOK_SECRET"
        return "PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET"

    def check_no_dev_secrets(self) -> None:
        """Refuses the public development secrets unless PAYSUITE_ALLOW_DEV_SECRETS is set."""
        if self.allow_dev_secrets:
            return
        for provider in self.provider_configs():
            if any(s.get_secret_value() in DEV_SECRETS for s in provider.webhook_secrets):
                raise ConfigError(
                    f"provider {provider.name} uses the public development webhook secret:"
                    " set its secret (PAYSUITE_WEBHOOK_SECRET, PAYSUITE_PROVIDER_SECONDARY_"
                    "WEBHOOK_SECRET or PAYSUITE_PROVIDERS), or PAYSUITE_ALLOW_DEV_SECRETS=true"
                    " for development"
                )

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


_ROLES = ("user", "operator", "service")  # common.auth.Role, which imports nothing of ours


def parse_rate_limits(text: str) -> dict[str, tuple[float, float]]:
    """ "user=200:400,operator=50" -> {role: (per second, burst)}; the burst defaults to the
    rate (one second's worth), and is at least 1."""
    table: dict[str, tuple[float, float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, sep, spec = item.partition("=")
        rate, _, burst = spec.partition(":")
        try:
            per_s, size = float(rate), float(burst or rate)
        except ValueError:
            per_s = size = 0.0
        if not sep or role.strip() not in _ROLES or not 0 < per_s < math.inf or not size >= 1:
            raise ValueError(
                f"expected ROLE=PER_S[:BURST] with a role of {', '.join(_ROLES)}, a positive"
                f" rate and a burst of at least 1; got {item!r}"
            )
        table[role.strip()] = (per_s, size)
    return table


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  PAYSUITE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
