"""What every bench section gets: the suite's endpoints, the options, and the run's records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from bench.admission import Refusals
from bench.cost import Cost, Probe
from common.config import Settings
from common.grpc.auth import bearer_channel
from paysuite.payment.v1 import payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2_grpc


@dataclass(frozen=True, slots=True)
class BenchOptions:
    duration_s: float = 20.0  # closed-loop deposits
    # Deposits whose clients each wait for completion: warm-up, cost window, statement window.
    complete_duration_s: float = 20.0
    open_duration_s: float = 10.0  # open-loop deposits
    movement_duration_s: float = 10.0  # closed-loop transfers, then withdrawals, each
    baseline_s: float = 5.0  # trivial-call baseline
    clients: int = 32
    accounts: int = 64
    pipeline_events: int = 20_000  # relay and consumer sections
    settle_timeout_s: float = 180.0  # how long to wait for every deposit to finish
    output_dir: Path = Path("bench/results")

    @classmethod
    def quick(cls, **overrides: object) -> BenchOptions:
        """A smoke run: every phase, short enough to try while developing."""
        values: dict[str, object] = {
            "duration_s": 4.0,
            "complete_duration_s": 5.0,
            "open_duration_s": 3.0,
            "movement_duration_s": 3.0,
            "baseline_s": 1.5,
            "accounts": 16,
            "pipeline_events": 3_000,
            "settle_timeout_s": 90.0,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]  # values mixes the options' types


@dataclass(frozen=True, slots=True)
class Deposit:
    """One CreateDeposit the bench sent; payment_id is empty when the call failed."""

    idempotency_key: str
    account_id: str
    amount_minor: int
    payment_id: str = ""
    # perf_counter() when the attempt that was admitted started (after any refusals).
    admitted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Movement:
    """One CreateTransfer or CreateWithdrawal the bench sent; payment_id is empty when the call
    failed. A withdrawal has no destination account."""

    idempotency_key: str
    kind: str  # "transfer" or "withdrawal", as the payments database spells it
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    payment_id: str = ""


@dataclass
class Timeline:
    """perf_counter() instants and latency samples (seconds) for the charts."""

    creates: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class BenchContext:
    settings: Settings  # database_url, redis_url and every target filled in
    options: BenchOptions
    run_id: str
    figures: dict[str, float] = field(default_factory=dict)
    accounts: list[str] = field(default_factory=list)
    deposits: dict[str, Deposit] = field(default_factory=dict)  # by idempotency key
    # Accounts of the transfer and withdrawal sections, each with what the bench credited it.
    funded: dict[str, int] = field(default_factory=dict)
    movements: dict[str, Movement] = field(default_factory=dict)  # by idempotency key
    timeline: Timeline = field(default_factory=Timeline)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    token: str = ""  # the bench's bearer token (bench.auth)
    probe: Probe | None = None  # where the cost is read; None: not measured
    costs: dict[str, Cost] = field(default_factory=dict)  # by kind of payment
    # Create calls admission control refused (and the bench repeated), by phase.
    refusals: dict[str, Refusals] = field(default_factory=dict)
    # Wallet processes the suite runs (PAYSUITE_WALLET_REPLICAS), and, for a suite the bench
    # started, how to run `n` more for one phase (yields the target naming them all).
    wallet_replicas: int = 1
    more_wallets: Callable[[int], AbstractContextManager[str]] | None = None

    def refusals_of(self, phase: str) -> Refusals:
        return self.refusals.setdefault(phase, Refusals())

    @property
    def database_url(self) -> str:
        return self.settings.require_database_url()

    @property
    def redis_url(self) -> str:
        return self.settings.require_redis_url()


@dataclass(frozen=True, slots=True)
class Clients:
    """What a load section talks to: the wallet and payment services, and Redis."""

    wallet: wallet_pb2_grpc.WalletServiceAsyncStub
    payments: payment_pb2_grpc.PaymentServiceAsyncStub
    redis: Redis


@asynccontextmanager
async def clients(ctx: BenchContext) -> AsyncIterator[Clients]:
    wallet_channel = bearer_channel(ctx.settings.wallet_target, ctx.token)
    payment_channel = bearer_channel(ctx.settings.payment_target, ctx.token)
    redis = Redis.from_url(ctx.redis_url)
    try:
        yield Clients(
            wallet_pb2_grpc.WalletServiceStub(wallet_channel),
            payment_pb2_grpc.PaymentServiceStub(payment_channel),
            redis,
        )
    finally:
        await redis.aclose()
        await wallet_channel.close()
        await payment_channel.close()
