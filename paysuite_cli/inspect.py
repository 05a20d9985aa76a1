"""`paysuite payments get|events|watch` and `paysuite events tail`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf import json_format
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from common.config import Settings
from common.events import SUITE_STREAMS
from common.grpc.client import create_channel
from common.money import Money
from paysuite.events.v1 import events_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite_cli import credentials
from paysuite_cli.credentials import TokenSource
from paysuite_cli.demo import status_name


@asynccontextmanager
async def payment_service(
    settings: Settings, console: Console, token: TokenSource | None = None
) -> AsyncIterator[payment_pb2_grpc.PaymentServiceAsyncStub]:
    """The payment service for one command, as an operator unless given a token; an error
    status ends the command (paysuite_cli.errors turns it into one line and its exit code)."""
    token = token or credentials.operator(settings)
    async with create_channel(settings.payment_target, token=token) as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


async def show_payment(settings: Settings, console: Console, payment_id: str) -> None:
    """Prints a payment and its history."""
    async with payment_service(settings, console) as stub:
        payment = await stub.GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=payment_id), timeout=10
        )
        history = await stub.ListPaymentEvents(
            payment_pb2.ListPaymentEventsRequest(payment_id=payment_id), timeout=10
        )
    amount = Money(payment.amount.amount_minor, payment.amount.currency)
    console.print(f"payment [bold]{payment.payment_id}[/]")
    console.print(f"  kind     {payment_pb2.PaymentKind.Name(payment.kind)}")
    console.print(f"  status   {status_name(payment.status)}")
    console.print(f"  amount   {amount}")
    console.print(f"  account  {payment.destination_account_id or payment.source_account_id}")
    if payment.failure_reason:
        console.print(f"  reason   {payment.failure_reason}")
    table = Table(title="status history", title_justify="left")
    for column in ("#", "from", "to", "reason", "at"):
        table.add_column(column)
    for change in history.changes:
        table.add_row(
            str(change.sequence),
            status_name(change.from_status) if change.from_status else "",
            status_name(change.to_status),
            change.reason,
            change.occurred_at.ToDatetime().isoformat(timespec="milliseconds"),
        )
    console.print(table)


async def show_audit_trail(settings: Settings, console: Console, payment_id: str) -> None:
    """Prints every step and transition of a payment, in order."""
    async with payment_service(settings, console) as stub:
        trail = await stub.ListPaymentEvents(
            payment_pb2.ListPaymentEventsRequest(payment_id=payment_id), timeout=10
        )
    table = Table(title=f"audit trail of {payment_id}", title_justify="left")
    for column in ("step", "event", "at", "data", "error"):
        table.add_column(column)
    for step in trail.steps:
        table.add_row(
            str(step.step),
            step.event_type,
            step.occurred_at.ToDatetime().isoformat(timespec="milliseconds"),
            ", ".join(f"{k}={v}" for k, v in sorted(step.data.items())),
            step.error,
        )
    console.print(table)


async def watch_payment(settings: Settings, console: Console, payment_id: str) -> None:
    """Prints each state the payment reaches until a terminal one."""
    async with payment_service(settings, console) as stub:
        request = payment_pb2.WatchPaymentRequest(payment_id=payment_id)
        async for payment in stub.WatchPayment(request):
            reason = f" ({payment.failure_reason})" if payment.failure_reason else ""
            at = payment.updated_at.ToDatetime().isoformat(timespec="milliseconds")
            console.print(f"{at}  v{payment.version}  {status_name(payment.status)}{reason}")


async def tail_events(
    settings: Settings, console: Console, stream: str, *, from_start: bool, count: int
) -> None:
    name = settings.stream_prefix + SUITE_STREAMS.get(stream, stream)
    redis = Redis.from_url(settings.require_redis_url())
    last_id = "0-0" if from_start else "$"
    seen = 0
    console.print(f"tailing [bold]{name}[/] (Ctrl-C to stop)")
    try:
        while count == 0 or seen < count:
            response: list[Any] = await redis.xread(  # type: ignore[assignment]  # redis-py annotates the reply as a loose union
                {name: last_id}, block=1000, count=100
            )
            for _stream, entries in response or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    _print_event(console, entry_id, fields)
                    seen += 1
    finally:
        await redis.aclose()


def _print_event(console: Console, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
    envelope = events_pb2.EventEnvelope.FromString(fields[b"envelope"])
    payload = json_format.MessageToDict(envelope, preserving_proto_field_name=True)
    console.print(
        f"[dim]{entry_id.decode()}[/dim] [bold]{envelope.event_type}[/bold] "
        f"{envelope.aggregate_type}/{envelope.aggregate_id} v{envelope.aggregate_version}"
    )
    console.print_json(data=payload.get("payload", {}))
