"""The seeded mixed workload: several clients, every kind of payment, both doors.

Each client draws its next request from its own seeded `random.Random`, so a seed replays the
same sequence of choices (which deposit a refund picks depends on which ones completed, so a
replay is the same workload, not the same interleaving). Every request and answer is recorded;
every payment created is watched (WatchPayment) and what the stream showed is recorded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from chaos.api import CALL_TIMEOUT_S, Api, Request, status_name
from chaos.history import AMBIGUOUS, OK, Call, History
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc

CURRENCIES = ("USD", "EUR", "JPY")
ACCOUNTS_PER_CURRENCY = 3
# Many clients on few accounts: the first two USD accounts take a share of everything.
HOT_ACCOUNTS = 2
HOT_SHARE = 0.4
FUNDING_MINOR = 200_000
# Rates for cross-currency transfers, set before the run (base, quote, rate).
RATES = (
    ("USD", "EUR", "0.92"),
    ("EUR", "USD", "1.08"),
    ("USD", "JPY", "150"),
    ("JPY", "USD", "1/151"),
    ("EUR", "JPY", "162"),
    ("JPY", "EUR", "1/163"),
)
# The simulator's magic values (provider_simulator.models).
GOOD_CARD, DECLINED_CARD = "pm_card_ok", "pm_card_declined"
GOOD_DESTINATION, FAILING_DESTINATION = "acct_ok", "acct_fail"
BEYOND_ANY_BALANCE = 10**13
RETRIES = 4  # an ambiguous answer is retried with the same key and request, this many times
# A refusal by admission control (RESOURCE_EXHAUSTED with a delay: nothing was done) is sent
# again after that delay, as a well-behaved client does, up to this many times, on top of the
# ambiguous answers' retries.
REFUSALS = 20
# A WatchPayment stream ends on these (payment.proto).
STREAM_ENDS = frozenset({"completed", "failed", "cancelled", "refunded", "partially_refunded"})
# What a client does next, and how often.
MIX: tuple[tuple[str, int], ...] = (
    ("deposit", 24),
    ("declined_deposit", 5),
    ("withdrawal", 12),
    ("failing_withdrawal", 4),
    ("overdraft_withdrawal", 3),
    ("transfer", 12),
    ("fx_transfer", 6),
    ("partial_refund", 6),
    ("full_refund", 3),
    ("racing_refunds", 3),
    ("cancel_withdrawal", 3),
    ("cancel_deposit", 2),
    ("repeat_same_request", 4),
    ("reuse_key_other_request", 3),
)


@dataclass
class Accounts:
    by_currency: dict[str, list[str]]

    @property
    def hot(self) -> list[str]:
        return self.by_currency["USD"][:HOT_ACCOUNTS]

    def pick(self, rng: random.Random, currency: str | None = None) -> str:
        if currency is None and rng.random() < HOT_SHARE:
            return rng.choice(self.hot)
        return rng.choice(self.by_currency[currency or rng.choice(CURRENCIES)])

    def currency_of(self, account_id: str) -> str:
        for currency, ids in self.by_currency.items():
            if account_id in ids:
                return currency
        raise KeyError(account_id)


@dataclass(frozen=True, slots=True)
class Completed:
    payment_id: str
    amount_minor: int
    currency: str


@dataclass
class Shared:
    """What clients learn from each other's answers: deposits a refund may take."""

    refundable: list[Completed] = field(default_factory=list)
    watches: set[asyncio.Task[None]] = field(default_factory=set)


class Recorder:
    def __init__(self, history: History) -> None:
        self.history = history

    def call(self, call: Call) -> None:
        self.history.calls.append(call)

    def seen(self, payment_id: str, status: str) -> None:
        self.history.watched.setdefault(payment_id, []).append(status)


class Watcher:
    """Follows each payment on WatchPayment until its stream ends, re-opening it after a
    fault; a deposit that completes becomes refundable."""

    def __init__(
        self,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        recorder: Recorder,
        shared: Shared,
        stop: asyncio.Event,
    ) -> None:
        self._payments = payments
        self._recorder = recorder
        self._shared = shared
        self._stop = stop

    def watch(self, call: Call, request: Request) -> None:
        if (
            call.outcome != OK
            or not call.payment_id
            or call.payment_id in self._recorder.history.watched
        ):
            return
        self._recorder.history.watched[call.payment_id] = []
        task = asyncio.create_task(self._follow(call.payment_id, request))
        self._shared.watches.add(task)
        task.add_done_callback(self._shared.watches.discard)

    async def _follow(self, payment_id: str, request: Request) -> None:
        while not self._stop.is_set():
            last = await self._stream(payment_id)
            if last in STREAM_ENDS:
                if last == "completed" and request.op == "deposit":
                    amount = request.amount_minor
                    self._shared.refundable.append(Completed(payment_id, amount, request.currency))
                return
            await asyncio.sleep(0.5)

    async def _stream(self, payment_id: str) -> str:
        last = ""
        stream = self._payments.WatchPayment(payment_pb2.WatchPaymentRequest(payment_id=payment_id))
        try:
            async for payment in stream:
                last = status_name(payment.status)
                self._recorder.seen(payment_id, last)
        except grpc.aio.AioRpcError:
            pass
        finally:
            stream.cancel()
        return last


class Client:
    def __init__(
        self,
        index: int,
        seed: int,
        *,
        api: Api,
        accounts: Accounts,
        recorder: Recorder,
        watcher: Watcher,
        shared: Shared,
        http_share: float,
    ) -> None:
        self.index = index
        # Not for security: a replayable workload is the point.
        self._rng = random.Random(seed * 1009 + index)  # noqa: S311 - seeded for a reproducible run, not for secrets
        self._api = api
        self._accounts = accounts
        self._recorder = recorder
        self._watcher = watcher
        self._shared = shared
        self._http_share = http_share
        self._n = 0
        self._answered: list[Request] = []  # deposits answered OK, for key repeats and reuses

    async def run(self, stop: asyncio.Event, pace_s: float) -> None:
        while not stop.is_set():
            kind = self._rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
            await getattr(self, f"_{kind}")()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._rng.uniform(0.2, 1.8) * pace_s)

    async def fund(self, account_id: str, currency: str) -> None:
        await self._send(self._deposit_request(account_id, currency, FUNDING_MINOR, GOOD_CARD))

    # --- the mix --------------------------------------------------------------------------

    async def _deposit(self, method: str = GOOD_CARD) -> None:
        account = self._accounts.pick(self._rng)
        currency = self._accounts.currency_of(account)
        amount = self._rng.randint(500, 20_000)
        request = self._deposit_request(account, currency, amount, method)
        call = await self._send(request)
        if call.outcome == OK:
            self._answered.append(request)

    async def _declined_deposit(self) -> None:
        await self._deposit(DECLINED_CARD)

    async def _withdrawal(self, destination: str = GOOD_DESTINATION, beyond: bool = False) -> None:
        account = self._accounts.pick(self._rng)
        amount = BEYOND_ANY_BALANCE if beyond else self._rng.randint(100, 4_000)
        await self._send(
            Request(
                op="withdrawal",
                key=self._key("wd"),
                account_id=account,
                amount_minor=amount,
                currency=self._accounts.currency_of(account),
                destination=destination,
            )
        )

    async def _failing_withdrawal(self) -> None:
        await self._withdrawal(FAILING_DESTINATION)

    async def _overdraft_withdrawal(self) -> None:
        await self._withdrawal(beyond=True)

    async def _transfer(self, fx: bool = False) -> None:
        source = self._accounts.pick(self._rng)
        currency = self._accounts.currency_of(source)
        other = [c for c in CURRENCIES if c != currency]
        target_currency = self._rng.choice(other) if fx else currency
        target = self._accounts.pick(self._rng, target_currency)
        if target == source:
            return
        await self._send(
            Request(
                op="transfer",
                key=self._key("tr"),
                account_id=source,
                to_account_id=target,
                amount_minor=self._rng.randint(100, 3_000),
                currency=currency,
            )
        )

    async def _fx_transfer(self) -> None:
        await self._transfer(fx=True)

    async def _partial_refund(self) -> None:
        deposit = self._refundable()
        if deposit is not None:
            amount = max(1, deposit.amount_minor // self._rng.randint(2, 5))
            await self._send(self._refund_request(deposit, amount))

    async def _full_refund(self) -> None:
        deposit = self._refundable(take=True)
        if deposit is not None:
            await self._send(self._refund_request(deposit, 0))

    async def _racing_refunds(self) -> None:
        """Two refunds of one deposit at once, each of more than half: at most one may win."""
        deposit = self._refundable(take=True)
        if deposit is not None:
            amount = deposit.amount_minor * 3 // 4
            await asyncio.gather(
                self._send(self._refund_request(deposit, amount)),
                self._send(self._refund_request(deposit, amount)),
            )

    async def _cancel_withdrawal(self) -> None:
        account = self._accounts.pick(self._rng)
        request = Request(
            op="withdrawal",
            key=self._key("wd"),
            account_id=account,
            amount_minor=self._rng.randint(100, 2_000),
            currency=self._accounts.currency_of(account),
            destination=GOOD_DESTINATION,
        )
        await self._create_then_cancel(request)

    async def _cancel_deposit(self) -> None:
        account = self._accounts.pick(self._rng)
        currency = self._accounts.currency_of(account)
        request = self._deposit_request(account, currency, self._rng.randint(500, 5_000), GOOD_CARD)
        await self._create_then_cancel(request)

    async def _create_then_cancel(self, request: Request) -> None:
        call = await self._send(request, via="grpc")
        if call.outcome == OK:
            if self._rng.random() < 0.5:
                await asyncio.sleep(self._rng.uniform(0, 0.3))
            cancel = Request(op="cancel", key="", payment_id=call.payment_id)
            await self._send(cancel, via="grpc")

    async def _repeat_same_request(self) -> None:
        if self._answered:
            await self._send(self._rng.choice(self._answered))

    async def _reuse_key_other_request(self) -> None:
        if not self._answered:
            return
        earlier = self._rng.choice(self._answered)
        other = Request(
            op=earlier.op,
            key=earlier.key,
            account_id=earlier.account_id,
            amount_minor=earlier.amount_minor + 1,
            currency=earlier.currency,
            payment_method=earlier.payment_method,
        )
        call = await self._api.send(self.index, other, via=self._via(), reuses_key=True)
        self._recorder.call(call)

    # --- helpers --------------------------------------------------------------------------

    def _key(self, prefix: str) -> str:
        self._n += 1
        return f"chaos-{prefix}-{self.index}-{self._n}"

    def _via(self) -> str:
        return "http" if self._rng.random() < self._http_share else "grpc"

    def _deposit_request(self, account: str, currency: str, amount: int, method: str) -> Request:
        return Request(
            op="deposit",
            key=self._key("dep"),
            account_id=account,
            amount_minor=amount,
            currency=currency,
            payment_method=method,
        )

    def _refund_request(self, deposit: Completed, amount: int) -> Request:
        return Request(
            op="refund",
            key=self._key("ref"),
            payment_id=deposit.payment_id,
            amount_minor=amount,
            currency=deposit.currency if amount else "",
        )

    def _refundable(self, *, take: bool = False) -> Completed | None:
        pool = self._shared.refundable
        if not pool:
            return None
        index = self._rng.randrange(len(pool))
        return pool.pop(index) if take else pool[index]

    async def _send(self, request: Request, via: str | None = None) -> Call:
        """Sends until answered (an ambiguous answer is retried with the same key and
        request), records every attempt, and watches the payment it created."""
        chosen = via or self._via()
        call = await self._api.send(self.index, request, via=chosen, reuses_key=False)
        self._recorder.call(call)
        retries, refusals = RETRIES, REFUSALS
        while call.outcome in AMBIGUOUS and request.op != "cancel":
            if call.outcome == "RESOURCE_EXHAUSTED" and call.retry_after_s is not None:
                if refusals == 0:
                    break
                refusals -= 1
                await asyncio.sleep(call.retry_after_s)
            else:
                if retries == 0:
                    break
                retries -= 1
                await asyncio.sleep(self._rng.uniform(0.2, 1.0))
            call = await self._api.send(self.index, request, via=chosen, reuses_key=False)
            self._recorder.call(call)
        if request.op != "cancel":
            self._watcher.watch(call, request)
        return call


async def run_clients(clients: Sequence[Client], stop: asyncio.Event, pace_s: float) -> None:
    await asyncio.gather(*(client.run(stop, pace_s) for client in clients))


__all__ = ["CALL_TIMEOUT_S", "Accounts", "Client", "Recorder", "Shared", "Watcher", "run_clients"]
