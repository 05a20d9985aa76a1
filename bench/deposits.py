"""The request path under load: a trivial-call baseline, then deposits in a complete loop (each
client waits for its deposit to complete: the capacity figure, and where their cost is
metered), a closed loop of creates and an open loop, from CreateDeposit to `payment.completed`."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Sequence

from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from bench import databases
from bench.admission import admitted
from bench.context import BenchContext, Deposit, clients
from bench.load import Sample, closed_loop, note_errors, open_loop, span
from bench.stats import Latency, p50_p99, rate
from bench.watch import CompletionWatcher, complete_loop
from common.events import PAYMENT_STREAM
from common.grpc.auth import bearer_channel
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

CURRENCY = "USD"
PAYMENT_METHOD = "pm_card_ok"
CALL_TIMEOUT_S = 30.0


def amount_of(i: int) -> int:
    """Distinct-looking amounts (1.00 to 99.99), so a doubled deposit cannot hide in a sum."""
    return 100 + (i * 7919) % 9900


async def measure_baseline(ctx: BenchContext) -> dict[str, float]:
    async with bearer_channel(ctx.settings.payment_target, ctx.token) as channel:
        # The typeshed stub declares no methods on HealthStub.
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]

        async def call(_i: int) -> None:
            await check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)

        await call(0)  # connect before the clock starts
        samples = await closed_loop(
            call, clients=ctx.options.clients, duration_s=ctx.options.baseline_s
        )
    ok = [s for s in samples if s.error == ""]
    return {"health_calls_per_s": rate(len(ok), span(ok))}


async def measure(ctx: BenchContext) -> dict[str, float]:
    """Complete loop, closed loop, then an open loop at half the closed loop's completion
    rate."""
    async with clients(ctx) as to:
        ctx.accounts = await open_accounts(to.wallet, ctx)
        stream = ctx.settings.stream_prefix + PAYMENT_STREAM
        figures = await _complete(ctx, to.payments, to.redis, stream)
        figures.update(await _closed(ctx, to.payments, to.redis, stream))
        ctx.figures.update(figures)
        figures.update(await _open(ctx, to.payments, to.redis, stream))
        return figures


async def open_accounts(
    wallet: wallet_pb2_grpc.WalletServiceAsyncStub, ctx: BenchContext
) -> list[str]:
    accounts = []
    for i in range(ctx.options.accounts):
        account = await wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(
                operation_ref=f"bench-{ctx.run_id}-account-{i}",
                owner_id=f"bench-{ctx.run_id}",
                currency=CURRENCY,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        accounts.append(account.account_id)
    return accounts


class Depositor:
    """Sends CreateDeposit with a fresh idempotency key each time, spread over the accounts."""

    def __init__(
        self, payments: payment_pb2_grpc.PaymentServiceAsyncStub, ctx: BenchContext, phase: str
    ) -> None:
        self._payments = payments
        self._ctx = ctx
        self._phase = phase
        self.refusals = ctx.refusals_of(f"deposit_{phase}")

    async def __call__(self, i: int) -> Deposit:
        ctx = self._ctx
        deposit = Deposit(
            idempotency_key=f"bench-{ctx.run_id}-{self._phase}-{i}-{uuid.uuid4().hex[:8]}",
            account_id=ctx.accounts[i % len(ctx.accounts)],
            amount_minor=amount_of(i),
        )
        # Recorded before the call: a call that fails client-side may still have committed.
        ctx.deposits[deposit.idempotency_key] = deposit
        request = payment_pb2.CreateDepositRequest(
            idempotency_key=deposit.idempotency_key,
            account_id=deposit.account_id,
            amount=money_pb2.Money(amount_minor=deposit.amount_minor, currency=CURRENCY),
            payment_method=PAYMENT_METHOD,
        )
        started = [0.0]

        def attempt() -> Awaitable[payment_pb2.Payment]:
            started[0] = time.perf_counter()
            return self._payments.CreateDeposit(request, timeout=CALL_TIMEOUT_S)

        payment = await admitted(attempt, self.refusals)
        accepted = dataclasses.replace(
            deposit, payment_id=payment.payment_id, admitted_at=started[0]
        )
        ctx.deposits[deposit.idempotency_key] = accepted
        return accepted


async def _complete(
    ctx: BenchContext,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    redis: Redis,
    stream: str,
) -> dict[str, float]:
    """Each client creates a deposit and waits until it completed before the next one; the
    deposits' cost is metered over this loop (bench/cost.py)."""
    depositor = Depositor(payments, ctx, "complete")

    async def create(i: int) -> str:
        return (await depositor(i)).payment_id

    metered = await complete_loop(
        ctx,
        create,
        kind="deposit",
        duration_s=ctx.options.complete_duration_s,
        redis=redis,
        stream=stream,
    )
    to_completed = [s.result for s in metered.samples if s.result is not None]
    ctx.timeline.latencies["create → completed (complete loop)"] = to_completed
    note_errors(ctx.notes, "complete loop", metered.samples, "CreateDeposit-and-wait")
    return {
        "complete_deposits_per_s": metered.completed_per_s,
        **p50_p99(Latency.of_seconds(to_completed).figures("complete_create_to_completed")),
        "deposit_errors_complete": float(len(metered.samples) - len(to_completed)),
        **depositor.refusals.figures("deposit", "complete"),
    }


async def _closed(
    ctx: BenchContext,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    redis: Redis,
    stream: str,
) -> dict[str, float]:
    depositor = Depositor(payments, ctx, "closed")
    async with CompletionWatcher(redis, stream) as watcher:
        samples = await closed_loop(
            depositor,
            clients=ctx.options.clients,
            duration_s=ctx.options.duration_s,
        )
        ids = _accepted_ids(samples)
        if not await watcher.wait_finished(ids, timeout_s=ctx.options.settle_timeout_s):
            ctx.notes.append("closed loop: not every deposit finished within the settle timeout")
    _record_timeline(ctx, samples, watcher)
    ok = [s for s in samples if s.result is not None]
    done = [watcher.completed[i] for i in ids if i in watcher.completed]
    first_create = min((s.started for s in ok), default=math.nan)
    to_completed = [
        watcher.completed[s.result.payment_id] - s.started
        for s in ok
        if s.result is not None and s.result.payment_id in watcher.completed
    ]
    # From the admitted attempt: the payment exists from then on; what the caller waited before
    # it (refusals and their retry delays) is in CreateDeposit's latency and the refused share.
    admitted_to_completed = [
        watcher.completed[s.result.payment_id] - s.result.admitted_at
        for s in ok
        if s.result is not None and s.result.payment_id in watcher.completed
    ]
    ctx.timeline.latencies["create → completed (closed)"] = to_completed
    ctx.timeline.latencies["CreateDeposit (closed)"] = [s.latency for s in ok]
    note_errors(ctx.notes, "closed loop", samples, "CreateDeposit")
    return {
        "deposit_creates_per_s": rate(len(ok), span(ok)),
        **Latency.of_seconds([s.latency for s in ok]).figures("deposit_create"),
        "deposits_completed_per_s": rate(len(done), max(done, default=math.nan) - first_create),
        **p50_p99(Latency.of_seconds(to_completed).figures("create_to_completed")),
        **p50_p99(Latency.of_seconds(admitted_to_completed).figures("admitted_to_completed")),
        "deposit_errors_closed": float(len(samples) - len(ok)),
        **depositor.refusals.figures("deposit", "closed"),
    }


async def _open(
    ctx: BenchContext,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    redis: Redis,
    stream: str,
) -> dict[str, float]:
    completed_rate = ctx.figures.get("deposits_completed_per_s", math.nan)
    arrivals = completed_rate / 2 if completed_rate > 0 else 1.0
    depositor = Depositor(payments, ctx, "open")
    async with CompletionWatcher(redis, stream) as watcher:
        samples = await open_loop(
            depositor,
            rate_per_s=arrivals,
            duration_s=ctx.options.open_duration_s,
        )
        ids = _accepted_ids(samples)
        if not await watcher.wait_finished(ids, timeout_s=ctx.options.settle_timeout_s):
            ctx.notes.append("open loop: not every deposit finished within the settle timeout")
    _record_timeline(ctx, samples, watcher)
    ok = [s for s in samples if s.result is not None]
    lags = await _webhook_lags(ctx, sorted(ids))
    ctx.timeline.latencies["CreateDeposit (open)"] = [s.latency for s in ok]
    ctx.timeline.latencies["webhook → completed (open)"] = lags
    note_errors(ctx.notes, "open loop", samples, "CreateDeposit")
    return {
        "open_loop_arrivals_per_s": arrivals,
        **p50_p99(Latency.of_seconds([s.latency for s in ok]).figures("open_create")),
        **p50_p99(Latency.of_seconds(lags).figures("webhook_to_completed")),
        "deposit_errors_open": float(len(samples) - len(ok)),
        **depositor.refusals.figures("deposit", "open"),
    }


async def _webhook_lags(ctx: BenchContext, payment_ids: Sequence[str]) -> list[float]:
    received = await databases.webhook_received_at(
        databases.dsn(ctx.settings, GATEWAY_DB), payment_ids
    )
    completed = await databases.completed_at(databases.dsn(ctx.settings, PAYMENT_DB), payment_ids)
    return [
        (completed[pid] - received[pid]).total_seconds()
        for pid in payment_ids
        if pid in received and pid in completed
    ]


def _accepted_ids(samples: Sequence[Sample[Deposit]]) -> set[str]:
    return {s.result.payment_id for s in samples if s.result is not None}


def _record_timeline(
    ctx: BenchContext, samples: Sequence[Sample[Deposit]], watcher: CompletionWatcher
) -> None:
    ids = _accepted_ids(samples)
    ctx.timeline.creates.extend(s.finished for s in samples if s.result is not None)
    ctx.timeline.completions.extend(t for pid, t in watcher.completed.items() if pid in ids)
