"""`paysuite payments withdraw|transfer|refund|cancel`: move money through the running payment
service, as `payments get` reads it (same channel, same one-line errors and exit codes).

AMOUNT is written as the CLI prints amounts, in major units ("12.50" USD, "1000" JPY), and is
turned into an integer count of minor units by the currency's exponent, digit by digit: no
floats, and more decimals than the currency has is refused rather than rounded.
"""

from __future__ import annotations

import contextlib
import math
import re
import uuid
from collections.abc import AsyncIterator

import grpc
from rich.console import Console
from rich.markup import escape

from common.config import Settings
from common.errors import Overloaded
from common.grpc.client import error_info
from common.grpc.retry_info import overload_delay_s
from common.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR, Money
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2
from paysuite_cli import credentials
from paysuite_cli.demo import status_name
from paysuite_cli.inspect import payment_service

CALL_TIMEOUT_S = 10
_AMOUNT = re.compile(r"(\d+)(?:\.(\d+))?")


class AmountError(ValueError):
    """An amount or currency the CLI refuses before calling anything."""


def parse_money(amount: str, currency: str) -> money_pb2.Money:
    """'12.50', 'usd' -> 1250 USD. Exact: decimal digits, never a float."""
    code = currency.strip().upper()
    if code not in CURRENCY_EXPONENTS:
        raise AmountError(f"unknown or unsupported currency {currency!r}")
    exponent = CURRENCY_EXPONENTS[code]
    match = _AMOUNT.fullmatch(amount.strip())
    if match is None:
        raise AmountError(f"amount {amount!r} is not a number like 12.50")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > exponent:
        raise AmountError(f"{code} has {exponent} decimal places; {amount!r} has {len(fraction)}")
    minor = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    if minor <= 0:
        raise AmountError("the amount must be positive")
    if minor > MAX_AMOUNT_MINOR:
        raise AmountError(f"amount {amount!r} is too large")
    return money_pb2.Money(amount_minor=minor, currency=code)


def new_key() -> str:
    """An idempotency key when none is given; printed, so the same request can be repeated."""
    return f"cli-{uuid.uuid4()}"


@contextlib.asynccontextmanager
async def _busy_says_repeat(key: str) -> AsyncIterator[None]:
    """A refusal by admission control (RESOURCE_EXHAUSTED) says what to do about it: nothing
    was done, so the same command with the same key, once the delay has passed."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        delay = overload_delay_s(exc)
        if delay is None:
            raise
        reason = error_info(exc)[0] or exc.code().name
        raise Overloaded(
            f"the suite is busy ({reason}) and did nothing: run the same command again with"
            f" --key {key} in {math.ceil(delay)} s or later",
            retry_after_s=delay,
        ) from None


async def withdraw(
    settings: Settings,
    console: Console,
    *,
    account_id: str,
    amount: money_pb2.Money,
    destination: str,
    key: str,
) -> None:
    token = await credentials.as_owner(settings, account_id)
    async with payment_service(settings, console, token) as stub, _busy_says_repeat(key):
        payment = await stub.CreateWithdrawal(
            payment_pb2.CreateWithdrawalRequest(
                idempotency_key=key, account_id=account_id, amount=amount, destination=destination
            ),
            timeout=CALL_TIMEOUT_S,
        )
    print_payment(console, payment)


async def transfer(
    settings: Settings,
    console: Console,
    *,
    source_account_id: str,
    destination_account_id: str,
    amount: money_pb2.Money,
    key: str,
) -> None:
    token = await credentials.as_owner(settings, source_account_id)
    async with payment_service(settings, console, token) as stub, _busy_says_repeat(key):
        payment = await stub.CreateTransfer(
            payment_pb2.CreateTransferRequest(
                idempotency_key=key,
                source_account_id=source_account_id,
                destination_account_id=destination_account_id,
                amount=amount,
            ),
            timeout=CALL_TIMEOUT_S,
        )
    print_payment(console, payment)


async def refund(
    settings: Settings,
    console: Console,
    *,
    payment_id: str,
    amount: money_pb2.Money | None,
    key: str,
) -> None:
    """A full refund when amount is None."""
    request = payment_pb2.RefundPaymentRequest(idempotency_key=key, payment_id=payment_id)
    if amount is not None:
        request.amount.CopyFrom(amount)
    async with payment_service(settings, console) as stub, _busy_says_repeat(key):
        payment = await stub.RefundPayment(request, timeout=CALL_TIMEOUT_S)
    print_payment(console, payment)


async def cancel(settings: Settings, console: Console, *, payment_id: str) -> None:
    async with payment_service(settings, console) as stub:
        payment = await stub.CancelPayment(
            payment_pb2.CancelPaymentRequest(payment_id=payment_id), timeout=CALL_TIMEOUT_S
        )
    print_payment(console, payment)


def print_payment(console: Console, payment: payment_pb2.Payment) -> None:
    amount = Money(payment.amount.amount_minor, payment.amount.currency)
    console.print(f"payment [bold]{payment.payment_id}[/]")
    console.print(f"  kind     {payment_pb2.PaymentKind.Name(payment.kind)}")
    console.print(f"  status   {status_name(payment.status)}")
    console.print(f"  amount   {amount}")
    for label, value in (
        ("from", payment.source_account_id),
        ("to", payment.destination_account_id),
        ("payout", payment.destination),
        ("refunds", payment.parent_payment_id),
        ("reason", payment.failure_reason),
    ):
        if value:
            console.print(f"  {label:<8} {escape(value)}")
    console.print(f"  key      {escape(payment.idempotency_key)}")
