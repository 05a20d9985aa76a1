"""What `make compose-test` checks, from outside the running stack (the host's published
ports only): money moves over gRPC and over the HTTP facade, Prometheus scrapes every process
and has seen the deposits, and a killed service's in-flight payment still completes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from pydantic import SecretStr

from common.auth import Role
from common.config import Settings
from common.grpc.auth import bearer_channel
from common.tokens import mint_for
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

USER = "compose-test-user"
CURRENCY = "USD"
COMPLETED = payment_pb2.PAYMENT_STATUS_COMPLETED
SETTLE_WITHIN_S = 60.0


@dataclass(frozen=True)
class Stack:
    """Where the host reaches the stack, and how to kill and bring back a service."""

    payment: int
    wallet: int
    webhook: int
    prometheus: int
    simulator: int
    auth_secret: str
    kill: Callable[[str], None]
    restart: Callable[[str], None]
    crash: Callable[[str], int]
    restarts: Callable[[str], int]


def say(message: str) -> None:
    print(f"  {message}", flush=True)


def _token(stack: Stack) -> str:
    settings = Settings(auth_secret=SecretStr(stack.auth_secret), allow_dev_secrets=True)
    return mint_for(settings, subject=USER, roles=[Role.USER], ttl_s=900)


def _usd(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency=CURRENCY)


async def _until(what: str, check: Callable[[], Awaitable[bool]], within_s: float) -> None:
    """Polls `check` until it holds; transport errors count as "not yet" (a restarting
    service), anything else fails at once."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if await check():
                return
        except (grpc.aio.AioRpcError, aiohttp.ClientError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        await asyncio.sleep(0.5)


class Payments:
    """The user's gRPC view of the suite: its wallet accounts and its payments."""

    def __init__(self, stack: Stack, token: str) -> None:
        self._stack = stack
        self._token = token

    async def open_account(self) -> str:
        async with bearer_channel(f"127.0.0.1:{self._stack.wallet}", self._token) as channel:
            account = await wallet_pb2_grpc.WalletServiceStub(channel).OpenAccount(
                wallet_pb2.OpenAccountRequest(
                    operation_ref=f"compose-test-{uuid.uuid4()}", owner_id=USER, currency=CURRENCY
                ),
                timeout=10,
            )
        return str(account.account_id)

    async def available(self, account_id: str) -> int:
        async with bearer_channel(f"127.0.0.1:{self._stack.wallet}", self._token) as channel:
            balance = await wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
                wallet_pb2.GetBalanceRequest(account_id=account_id), timeout=10
            )
        return int(balance.available.amount_minor)

    async def create(self, method: str, request: Any) -> str:
        async with bearer_channel(f"127.0.0.1:{self._stack.payment}", self._token) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            payment = await getattr(stub, method)(request, timeout=10)
        return str(payment.payment_id)

    async def status(self, payment_id: str) -> int:
        async with bearer_channel(f"127.0.0.1:{self._stack.payment}", self._token) as channel:
            payment = await payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=payment_id), timeout=5
            )
        return int(payment.status)

    async def completes(
        self, what: str, payment_id: str, within_s: float = SETTLE_WITHIN_S
    ) -> None:
        async def completed() -> bool:
            status = await self.status(payment_id)
            failed = status != COMPLETED and status in TERMINAL
            assert not failed, f"{what} {payment_id} ended {payment_pb2.PaymentStatus.Name(status)}"  # type: ignore[arg-type]
            return status == COMPLETED

        await _until(f"{what} {payment_id} completed", completed, within_s)


TERMINAL = frozenset(
    {
        payment_pb2.PAYMENT_STATUS_COMPLETED,
        payment_pb2.PAYMENT_STATUS_FAILED,
        payment_pb2.PAYMENT_STATUS_CANCELLED,
        payment_pb2.PAYMENT_STATUS_REFUNDED,
        payment_pb2.PAYMENT_STATUS_REQUIRES_MANUAL_REVIEW,
    }
)


async def money_moves_over_grpc(payments: Payments, account: str, other: str) -> None:
    deposit = await payments.create(
        "CreateDeposit",
        payment_pb2.CreateDepositRequest(
            idempotency_key=str(uuid.uuid4()),
            account_id=account,
            amount=_usd(10_000),
            payment_method="pm_card_ok",
        ),
    )
    await payments.completes("gRPC deposit", deposit)
    withdrawal = await payments.create(
        "CreateWithdrawal",
        payment_pb2.CreateWithdrawalRequest(
            idempotency_key=str(uuid.uuid4()),
            account_id=account,
            amount=_usd(1_500),
            destination="acct_ok",
        ),
    )
    await payments.completes("gRPC withdrawal", withdrawal)
    transfer = await payments.create(
        "CreateTransfer",
        payment_pb2.CreateTransferRequest(
            idempotency_key=str(uuid.uuid4()),
            source_account_id=account,
            destination_account_id=other,
            amount=_usd(500),
        ),
    )
    await payments.completes("gRPC transfer", transfer)
    assert await payments.available(account) == 8_000
    assert await payments.available(other) == 500
    say("gRPC: deposit 100.00, withdrawal 15.00, transfer 5.00 completed; balances 80.00 / 5.00")


async def money_moves_over_http(stack: Stack, token: str, account: str, other: str) -> None:
    base = f"http://127.0.0.1:{stack.webhook}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def post(path: str, body: dict[str, Any]) -> str:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            async with http.post(f"{base}{path}", json=body, headers=key) as response:
                answer = await response.json()
                assert response.status == 202, (path, response.status, answer)
            return str(answer["transaction_id"])

        async def completes(what: str, transaction: str) -> None:
            async def completed() -> bool:
                async with http.get(f"{base}/transaction/{transaction}/status") as response:
                    answer = await response.json()
                assert answer["status"] not in ("failed", "cancelled"), (what, answer)
                return bool(answer["status"] == "completed")

            await _until(f"HTTP {what} {transaction} completed", completed, SETTLE_WITHIN_S)

        amount = {"currency": CURRENCY}
        deposit = await post(f"/account/{account}/deposit", {**amount, "amount_minor": 2_000})
        await completes("deposit", deposit)
        withdrawal = await post(
            f"/account/{account}/withdraw",
            {**amount, "amount_minor": 700, "destination": "acct_ok"},
        )
        await completes("withdrawal", withdrawal)
        transfer = await post(
            f"/account/{account}/transfer", {**amount, "amount_minor": 300, "to_account_id": other}
        )
        await completes("transfer", transfer)
    say("HTTP facade: deposit 20.00, withdrawal 7.00, transfer 3.00 completed")


async def _prometheus(stack: Stack, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{stack.prometheus}{path}") as response,
    ):
        return await response.json()


async def prometheus_sees_everything(stack: Stack) -> None:
    async def all_up() -> bool:
        targets = (await _prometheus(stack, "/api/v1/targets"))["data"]["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    await _until("every Prometheus target up", all_up, 60)
    targets = (await _prometheus(stack, "/api/v1/targets"))["data"]["activeTargets"]
    say(f"Prometheus: all {len(targets)} targets up")
    query = 'sum(payment_success_total{kind="deposit"})'

    async def deposits_counted() -> bool:
        result = (await _prometheus(stack, f"/api/v1/query?query={query}"))["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) >= 2

    # Scraped every 15 s: give it a few scrapes.
    await _until(f"{query} >= 2 in Prometheus", deposits_counted, 60)
    say(f"Prometheus: {query} counts both deposits")


async def _slow_settlements(stack: Stack, settle_delay_ms: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            f"http://127.0.0.1:{stack.simulator}/_sim/config",
            data=json.dumps({"settle_delay_ms": settle_delay_ms}),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def a_killed_service_finishes_its_payment(
    stack: Stack, payments: Payments, account: str
) -> None:
    """The payment service is killed while its deposit waits for the provider's webhook; the
    webhook lands while it is down, and once back it picks the event up from the stream."""
    await _slow_settlements(stack, 4_000)
    try:
        deposit = await payments.create(
            "CreateDeposit",
            payment_pb2.CreateDepositRequest(
                idempotency_key=str(uuid.uuid4()),
                account_id=account,
                amount=_usd(4_200),
                payment_method="pm_card_ok",
            ),
        )

        # Killed once the provider has the charge: its webhook is then bound to land while
        # the payment service is down.
        async def at_the_provider() -> bool:
            return await payments.status(deposit) == payment_pb2.PAYMENT_STATUS_PENDING

        await _until(f"deposit {deposit} pending at the provider", at_the_provider, 3)
        stack.kill("payment")
        say(f"killed the payment service with deposit {deposit} pending at the provider")
        await asyncio.sleep(6)  # the provider settles and posts its webhook meanwhile
        stack.restart("payment")
        await payments.completes("deposit across the kill", deposit)
        say("the deposit completed after the payment service came back")
    finally:
        await _slow_settlements(stack, 300)


async def a_crashed_service_is_restarted_by_its_policy(
    stack: Stack, payments: Payments, account: str, other: str
) -> None:
    """The wallet service's process dies (not through Docker's API): `restart:
    unless-stopped` brings it back by itself, and money moves through it again."""
    before = stack.crash("wallet")
    say("crashed the wallet service (SIGKILL to its process)")

    async def restarted() -> bool:
        return stack.restarts("wallet") > before

    await _until("the wallet container restarted by its restart policy", restarted, 30)
    request = payment_pb2.CreateTransferRequest(
        idempotency_key=str(uuid.uuid4()),
        source_account_id=account,
        destination_account_id=other,
        amount=_usd(100),
    )
    created: list[str] = []

    async def accepted() -> bool:
        # The same idempotency key on every try: a retry can never move the money twice.
        created.append(await payments.create("CreateTransfer", request))
        return True

    await _until("a transfer accepted after the wallet's restart", accepted, 60)
    await payments.completes("transfer after the wallet's restart", created[-1])
    say("Docker restarted it by its policy, and a transfer through it completed")


async def run(stack: Stack) -> None:
    token = _token(stack)
    payments = Payments(stack, token)
    account, other = await payments.open_account(), await payments.open_account()
    await money_moves_over_grpc(payments, account, other)
    await money_moves_over_http(stack, token, account, other)
    await prometheus_sees_everything(stack)
    await a_killed_service_finishes_its_payment(stack, payments, account)
    await a_crashed_service_is_restarted_by_its_policy(stack, payments, account, other)
