"""`paysuite demo`: one successful and one declined deposit against the running suite."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from rich.console import Console

from common.config import Settings
from common.grpc.client import create_channel
from common.money import Money
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

POLL_S = 0.02
TERMINAL = {
    payment_pb2.PAYMENT_STATUS_COMPLETED,
    payment_pb2.PAYMENT_STATUS_FAILED,
    payment_pb2.PAYMENT_STATUS_REFUNDED,
    payment_pb2.PAYMENT_STATUS_REQUIRES_MANUAL_REVIEW,
}


def status_name(status: int) -> str:
    return payment_pb2.PaymentStatus.Name(status).removeprefix("PAYMENT_STATUS_").lower()  # type: ignore[arg-type]


async def run(settings: Settings, console: Console, *, timeout_s: float) -> bool:
    wallet_channel = create_channel(settings.wallet_target)
    payment_channel = create_channel(settings.payment_target)
    async with wallet_channel, payment_channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
        payments = payment_pb2_grpc.PaymentServiceStub(payment_channel)
        try:
            account = await wallet.OpenAccount(
                wallet_pb2.OpenAccountRequest(
                    operation_ref=f"demo-{uuid.uuid4()}", owner_id="demo-user", currency="USD"
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            console.print(f"[red]cannot reach the wallet service: {exc.details()}[/red]")
            console.print("Is the suite running? Start it with `make run`.")
            return False
        console.print(f"opened account [bold]{account.account_id}[/] (USD)")
        ok = await _deposit(payments, account.account_id, 1250, "pm_card_ok", console, timeout_s)
        ok &= await _deposit(
            payments, account.account_id, 700, "pm_card_declined", console, timeout_s
        )
        balance = await wallet.GetBalance(
            wallet_pb2.GetBalanceRequest(account_id=account.account_id), timeout=10
        )
        available = Money(balance.available.amount_minor, balance.available.currency)
        console.print(f"account balance: [bold]{available}[/] available")
        return ok


async def _deposit(
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    account_id: str,
    amount_minor: int,
    payment_method: str,
    console: Console,
    timeout_s: float,
) -> bool:
    amount = Money(amount_minor, "USD")
    console.print(f"\ndeposit of [bold]{amount}[/] with payment method {payment_method}")
    started = time.monotonic()
    payment = await payments.CreateDeposit(
        payment_pb2.CreateDepositRequest(
            idempotency_key=f"demo-{uuid.uuid4()}",
            account_id=account_id,
            amount=money_pb2.Money(amount_minor=amount_minor, currency="USD"),
            payment_method=payment_method,
        ),
        timeout=10,
    )
    _print(console, started, payment, "CreateDeposit returned")
    last = payment.status
    while payment.status not in TERMINAL:
        if time.monotonic() - started > timeout_s:
            console.print(f"[red]still {status_name(payment.status)} after {timeout_s}s[/red]")
            return False
        await asyncio.sleep(POLL_S)
        payment = await payments.GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=payment.payment_id), timeout=10
        )
        if payment.status != last:
            _print(console, started, payment, "status changed")
            last = payment.status
    return True


def _print(console: Console, started: float, payment: payment_pb2.Payment, what: str) -> None:
    elapsed_ms = (time.monotonic() - started) * 1000
    reason = f" ({payment.failure_reason})" if payment.failure_reason else ""
    colour = {"completed": "green", "failed": "red"}.get(status_name(payment.status), "yellow")
    console.print(
        f"  {elapsed_ms:7.0f} ms  {payment.payment_id}  "
        f"[{colour}]{status_name(payment.status)}[/{colour}]{reason}  — {what}"
    )
