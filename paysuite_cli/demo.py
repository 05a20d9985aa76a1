"""`paysuite demo`: every kind of payment against the running suite — a deposit and a declined
one, a transfer, a withdrawal and a declined one, and a partial refund — each followed from
its answer to its final state, then the balances."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable

import grpc
from rich.console import Console

from common.config import Settings
from common.grpc.client import create_channel
from common.money import Money
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paysuite_cli import credentials
from paysuite_cli.endpoints import SuiteNotRunning

POLL_S = 0.02
TERMINAL = {
    payment_pb2.PAYMENT_STATUS_COMPLETED,
    payment_pb2.PAYMENT_STATUS_FAILED,
    payment_pb2.PAYMENT_STATUS_CANCELLED,
    payment_pb2.PAYMENT_STATUS_REFUNDED,
    payment_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    payment_pb2.PAYMENT_STATUS_REQUIRES_MANUAL_REVIEW,
}


def status_name(status: int) -> str:
    return payment_pb2.PaymentStatus.Name(status).removeprefix("PAYMENT_STATUS_").lower()  # type: ignore[arg-type]


DEMO_USER = "demo-user"
OTHER_USER = "demo-other-user"


async def run(settings: Settings, console: Console, *, timeout_s: float) -> bool:
    # Every call carries the demo user's bearer token: it owns the accounts it opens, and
    # only it (or an operator) may read or move their money.
    token = credentials.as_user(settings, DEMO_USER)
    console.print(
        f"acting as [bold]{DEMO_USER}[/] with a token from the suite's key"
        f" (as `paysuite token issue --user {DEMO_USER}` makes)"
    )
    wallet_channel = create_channel(settings.wallet_target, token=token)
    payment_channel = create_channel(settings.payment_target, token=token)
    async with wallet_channel, payment_channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
        payments = payment_pb2_grpc.PaymentServiceStub(payment_channel)
        try:
            account = await wallet.OpenAccount(
                wallet_pb2.OpenAccountRequest(
                    operation_ref=f"demo-{uuid.uuid4()}", owner_id=DEMO_USER, currency="USD"
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                raise SuiteNotRunning(
                    f"cannot reach the wallet service at {settings.wallet_target}:"
                    " is the suite running? Start it with `make run`"
                ) from None
            raise
        saver = await wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(
                operation_ref=f"demo-{uuid.uuid4()}", owner_id=DEMO_USER, currency="USD"
            ),
            timeout=10,
        )
        console.print(f"opened accounts [bold]{account.account_id}[/] and {saver.account_id} (USD)")
        follow = _Follower(payments, console, timeout_s)
        account_id = account.account_id

        async def deposit_of(amount: int, method: str) -> payment_pb2.Payment | None:
            return await follow(
                f"deposit of {usd(amount)} with payment method {method}",
                payments.CreateDeposit(
                    payment_pb2.CreateDepositRequest(
                        idempotency_key=_key(),
                        account_id=account_id,
                        amount=_money(amount),
                        payment_method=method,
                    ),
                    timeout=10,
                ),
            )

        async def withdrawal_of(amount: int, destination: str) -> payment_pb2.Payment | None:
            return await follow(
                f"withdrawal of {usd(amount)} to destination {destination}",
                payments.CreateWithdrawal(
                    payment_pb2.CreateWithdrawalRequest(
                        idempotency_key=_key(),
                        account_id=account_id,
                        amount=_money(amount),
                        destination=destination,
                    ),
                    timeout=10,
                ),
            )

        deposit = await deposit_of(1250, "pm_card_ok")
        declined = await deposit_of(700, "pm_card_declined")
        transfer = await follow(
            f"transfer of {usd(250)} to the second account",
            payments.CreateTransfer(
                payment_pb2.CreateTransferRequest(
                    idempotency_key=_key(),
                    source_account_id=account.account_id,
                    destination_account_id=saver.account_id,
                    amount=_money(250),
                ),
                timeout=10,
            ),
        )
        withdrawal = await withdrawal_of(300, "acct_ok")
        bounced = await withdrawal_of(100, "acct_fail")  # the provider declines it
        ok = all(p is not None for p in (deposit, declined, transfer, withdrawal, bounced))
        if deposit is not None:
            refund = await follow(
                f"refund of {usd(200)} of the first deposit",
                payments.RefundPayment(
                    payment_pb2.RefundPaymentRequest(
                        idempotency_key=_key(), payment_id=deposit.payment_id, amount=_money(200)
                    ),
                    timeout=10,
                ),
            )
            ok &= refund is not None
            parent = await payments.GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=deposit.payment_id), timeout=10
            )
            _print(console, time.monotonic(), parent, "the deposit, after its refund")
            ok &= await _refused_to_another_user(settings, console, deposit.payment_id)
        console.print("")
        for label, account_id in (("first", account.account_id), ("second", saver.account_id)):
            balance = await wallet.GetBalance(
                wallet_pb2.GetBalanceRequest(account_id=account_id), timeout=10
            )
            available = Money(balance.available.amount_minor, balance.available.currency)
            console.print(f"{label} account balance: [bold]{available}[/] available")
        return ok


async def _refused_to_another_user(settings: Settings, console: Console, payment_id: str) -> bool:
    console.print(f"\nanother user ({OTHER_USER}) asks for the deposit")
    token = credentials.as_user(settings, OTHER_USER)
    async with create_channel(settings.payment_target, token=token) as channel:
        try:
            await payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=payment_id), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            console.print(f"  refused: {exc.code().name}: {exc.details()}")
            return exc.code() is grpc.StatusCode.PERMISSION_DENIED
    console.print("  [red]it was shown the payment[/red]")
    return False


def usd(amount_minor: int) -> Money:
    return Money(amount_minor, "USD")


def _money(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency="USD")


def _key() -> str:
    return f"demo-{uuid.uuid4()}"


class _Follower:
    """Sends one create call and follows its payment to a final or settled state."""

    def __init__(
        self,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        console: Console,
        timeout_s: float,
    ) -> None:
        self._payments = payments
        self._console = console
        self._timeout_s = timeout_s

    async def __call__(
        self, what: str, call: Awaitable[payment_pb2.Payment]
    ) -> payment_pb2.Payment | None:
        console = self._console
        console.print(f"\n{what}")
        started = time.monotonic()
        try:
            payment = await call
        except grpc.aio.AioRpcError as exc:
            console.print(f"  [red]{exc.code().name}: {exc.details()}[/red]")
            return None
        _print(console, started, payment, "returned")
        last = payment.status
        while payment.status not in TERMINAL:
            if time.monotonic() - started > self._timeout_s:
                console.print(
                    f"[red]still {status_name(payment.status)} after {self._timeout_s}s[/red]"
                )
                return None
            await asyncio.sleep(POLL_S)
            payment = await self._payments.GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=payment.payment_id), timeout=10
            )
            if payment.status != last:
                _print(console, started, payment, "status changed")
                last = payment.status
        return payment


def _print(console: Console, started: float, payment: payment_pb2.Payment, what: str) -> None:
    elapsed_ms = (time.monotonic() - started) * 1000
    reason = f" ({payment.failure_reason})" if payment.failure_reason else ""
    colour = {"completed": "green", "failed": "red", "partially_refunded": "cyan"}.get(
        status_name(payment.status), "yellow"
    )
    console.print(
        f"  {elapsed_ms:7.0f} ms  {payment.payment_id}  "
        f"[{colour}]{status_name(payment.status)}[/{colour}]{reason}  — {what}"
    )
