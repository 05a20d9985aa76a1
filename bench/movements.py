"""Money leaving and moving between accounts under load: a closed loop of CreateTransfer, then
one of CreateWithdrawal, on accounts of their own that the bench funds with wallet Credits.

A transfer answers once its one wallet operation committed, so completed/s is successful
CreateTransfer/s. A withdrawal answers PENDING with its money held; it completes when the
provider confirms the payout, seen as `payment.completed` on the payment stream.

The cost of a transfer is metered over its closed loop (each call is a whole transfer); that
of a withdrawal over a complete loop after the closed one, each client waiting for its
withdrawal to complete (bench/cost.py).
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Sequence

from redis.asyncio import Redis

from bench import cost
from bench.admission import admitted
from bench.context import BenchContext, Movement, clients
from bench.deposits import CALL_TIMEOUT_S, CURRENCY, amount_of
from bench.load import closed_loop, note_errors, span
from bench.stats import Latency, p50_p99, rate
from bench.watch import CompletionWatcher, complete_loop
from common.events import PAYMENT_STREAM
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

# Each account's funding: far more than any run moves out of it, so no call is refused.
FUNDING_MINOR = 10**12
PAYOUT_DESTINATION = "acct_ok"  # the simulator pays out to any destination but acct_fail/closed
TRANSFER = "transfer"
WITHDRAWAL = "withdrawal"


def transfer_pair(i: int, accounts: Sequence[str]) -> tuple[str, str]:
    """Call i's source and destination: disjoint pairs, taken in turn, so concurrent transfers
    rarely wait on each other's rows; the direction flips each round so money goes both ways."""
    pairs = len(accounts) // 2
    if pairs == 0:
        raise ValueError("transfers need at least two accounts")
    k, round_ = i % pairs, i // pairs
    a, b = accounts[2 * k], accounts[2 * k + 1]
    return (b, a) if round_ % 2 else (a, b)


async def measure(ctx: BenchContext) -> dict[str, float]:
    async with clients(ctx) as to:
        accounts = await _open_funded(to.wallet, ctx)
        figures = await _transfers(ctx, to.payments, accounts, to.redis)
        stream = ctx.settings.stream_prefix + PAYMENT_STREAM
        figures.update(await _withdrawals(ctx, to.payments, accounts, to.redis, stream))
        figures.update(await _complete_withdrawals(ctx, to.payments, accounts, to.redis, stream))
        return figures


async def _open_funded(
    wallet: wallet_pb2_grpc.WalletServiceAsyncStub, ctx: BenchContext
) -> list[str]:
    accounts = []
    for i in range(max(ctx.options.accounts, 2)):
        account = await wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(
                operation_ref=f"bench-{ctx.run_id}-funded-{i}",
                owner_id=f"bench-{ctx.run_id}",
                currency=CURRENCY,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        await wallet.Credit(
            wallet_pb2.CreditRequest(
                operation_ref=f"bench-{ctx.run_id}-funding-{i}",
                account_id=account.account_id,
                amount=money_pb2.Money(amount_minor=FUNDING_MINOR, currency=CURRENCY),
            ),
            timeout=CALL_TIMEOUT_S,
        )
        ctx.funded[account.account_id] = FUNDING_MINOR
        accounts.append(account.account_id)
    return accounts


class _Mover:
    """Sends CreateTransfer or CreateWithdrawal with a fresh idempotency key each time."""

    def __init__(
        self,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        ctx: BenchContext,
        accounts: Sequence[str],
        kind: str,
        phase: str = "closed",
    ) -> None:
        self._payments = payments
        self._ctx = ctx
        self._accounts = accounts
        self._kind = kind
        self.refusals = ctx.refusals_of(f"{kind}_{phase}")

    async def __call__(self, i: int) -> Movement:
        ctx = self._ctx
        key = f"bench-{ctx.run_id}-{self._kind}-{i}-{uuid.uuid4().hex[:8]}"
        amount = money_pb2.Money(amount_minor=amount_of(i), currency=CURRENCY)
        if self._kind == TRANSFER:
            source, destination = transfer_pair(i, self._accounts)
        else:
            source, destination = self._accounts[i % len(self._accounts)], ""
        movement = Movement(key, self._kind, source, destination, amount.amount_minor)
        # Recorded before the call: a call that fails client-side may still have committed.
        ctx.movements[key] = movement
        payment = await admitted(
            lambda: self._create(key, source, destination, amount), self.refusals
        )
        accepted = dataclasses.replace(movement, payment_id=payment.payment_id)
        ctx.movements[key] = accepted
        return accepted

    def _create(
        self, key: str, source: str, destination: str, amount: money_pb2.Money
    ) -> Awaitable[payment_pb2.Payment]:
        if self._kind == TRANSFER:
            return self._payments.CreateTransfer(
                payment_pb2.CreateTransferRequest(
                    idempotency_key=key,
                    source_account_id=source,
                    destination_account_id=destination,
                    amount=amount,
                ),
                timeout=CALL_TIMEOUT_S,
            )
        return self._payments.CreateWithdrawal(
            payment_pb2.CreateWithdrawalRequest(
                idempotency_key=key,
                account_id=source,
                amount=amount,
                destination=PAYOUT_DESTINATION,
            ),
            timeout=CALL_TIMEOUT_S,
        )


async def _transfers(
    ctx: BenchContext,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    accounts: list[str],
    redis: Redis,
) -> dict[str, float]:
    mover = _Mover(payments, ctx, accounts, TRANSFER)
    finishes = cost.Finishes()

    async def transfer(i: int) -> Movement:
        movement = await mover(i)
        finishes.times.append(time.perf_counter())
        return movement

    metered = await cost.metered_loop(
        transfer,
        kind=TRANSFER,
        clients=ctx.options.clients,
        windows=cost.Windows.within(ctx.options.movement_duration_s),
        meter=cost.Meter(ctx.probe, redis, finishes, notes=ctx.notes),
    )
    if metered.cost is not None:
        ctx.costs[TRANSFER] = metered.cost
    samples = metered.samples
    ok = [s for s in samples if s.result is not None]
    ctx.timeline.latencies["CreateTransfer (closed)"] = [s.latency for s in ok]
    note_errors(ctx.notes, "transfers", samples, "CreateTransfer")
    return {
        "transfers_completed_per_s": rate(len(ok), span(ok)),
        **p50_p99(Latency.of_seconds([s.latency for s in ok]).figures("transfer_create")),
        "transfer_errors": float(len(samples) - len(ok)),
        **mover.refusals.figures(TRANSFER),
    }


async def _withdrawals(
    ctx: BenchContext,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    accounts: list[str],
    redis: Redis,
    stream: str,
) -> dict[str, float]:
    mover = _Mover(payments, ctx, accounts, WITHDRAWAL)
    async with CompletionWatcher(redis, stream) as watcher:
        samples = await closed_loop(
            mover,
            clients=ctx.options.clients,
            duration_s=ctx.options.movement_duration_s,
        )
        ok = [s for s in samples if s.result is not None]
        ids = {s.result.payment_id for s in ok if s.result is not None}
        if not await watcher.wait_finished(ids, timeout_s=ctx.options.settle_timeout_s):
            ctx.notes.append("withdrawals: not every one finished within the settle timeout")
    done = [watcher.completed[i] for i in ids if i in watcher.completed]
    first_create = min((s.started for s in ok), default=math.nan)
    to_completed = [
        watcher.completed[s.result.payment_id] - s.started
        for s in ok
        if s.result is not None and s.result.payment_id in watcher.completed
    ]
    ctx.timeline.latencies["CreateWithdrawal (closed)"] = [s.latency for s in ok]
    ctx.timeline.latencies["withdrawal create → completed"] = to_completed
    note_errors(ctx.notes, "withdrawals", samples, "CreateWithdrawal")
    if len(done) < len(ids):
        ctx.notes.append(f"withdrawals: {len(ids) - len(done)} of {len(ids)} did not complete")
    return {
        "withdrawals_completed_per_s": rate(len(done), max(done, default=math.nan) - first_create),
        **p50_p99(Latency.of_seconds([s.latency for s in ok]).figures("withdrawal_create")),
        **p50_p99(Latency.of_seconds(to_completed).figures("withdrawal_to_completed")),
        "withdrawal_errors": float(len(samples) - len(ok)),
        **mover.refusals.figures(WITHDRAWAL),
    }


async def _complete_withdrawals(
    ctx: BenchContext,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    accounts: list[str],
    redis: Redis,
    stream: str,
) -> dict[str, float]:
    mover = _Mover(payments, ctx, accounts, WITHDRAWAL, "complete")

    async def create(i: int) -> str:
        return (await mover(i)).payment_id

    metered = await complete_loop(
        ctx,
        create,
        kind=WITHDRAWAL,
        duration_s=ctx.options.movement_duration_s,
        redis=redis,
        stream=stream,
    )
    ok = [s.result for s in metered.samples if s.result is not None]
    note_errors(ctx.notes, "withdrawals, complete loop", metered.samples, "withdraw-and-wait")
    return {
        "complete_withdrawals_per_s": metered.completed_per_s,
        "withdrawal_errors_complete": float(len(metered.samples) - len(ok)),
        **mover.refusals.figures(WITHDRAWAL, "complete"),
    }
