"""`paysuite review list|show|resolve`: the manual-review workbench, through the payment
service's gRPC API (the suite must be running, as for `paysuite payments ...`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum

import grpc
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.config import Settings
from common.grpc.client import create_channel, error_info
from common.money import Money
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite_cli import credentials
from paysuite_cli.demo import status_name

RPC_TIMEOUT_S = 10


class ResolveAs(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


_RESOLUTION = {
    ResolveAs.COMPLETED: payment_pb2.REVIEW_RESOLUTION_COMPLETED,
    ResolveAs.FAILED: payment_pb2.REVIEW_RESOLUTION_FAILED,
    ResolveAs.REFUNDED: payment_pb2.REVIEW_RESOLUTION_REFUNDED,
}


@asynccontextmanager
async def _reviews(
    settings: Settings, console: Console, operator: str | None = None
) -> AsyncIterator[payment_pb2_grpc.PaymentServiceAsyncStub]:
    """The payment service for one command; an error status ends it in one line with its
    code and reason (e.g. FAILED_PRECONDITION REVIEW_ALREADY_RESOLVED), exit code 1."""
    async with create_channel(
        settings.payment_target, token=credentials.operator(settings, operator)
    ) as channel:
        try:
            yield payment_pb2_grpc.PaymentServiceStub(channel)
        except grpc.aio.AioRpcError as exc:
            reason, _ = error_info(exc)
            code = exc.code().name
            label = f"{code} {reason}" if reason and reason != code else code
            console.print(f"[red]{escape(label)}: {escape(exc.details() or '')}[/red]")
            raise typer.Exit(1) from None


def _case_status(status: int) -> str:
    name = payment_pb2.ReviewCaseStatus.Name(status)  # type: ignore[arg-type]
    return name.removeprefix("REVIEW_CASE_STATUS_").lower()


def _resolution(resolution: int) -> str:
    if resolution == payment_pb2.REVIEW_RESOLUTION_UNSPECIFIED:
        return ""
    name = payment_pb2.ReviewResolution.Name(resolution)  # type: ignore[arg-type]
    return name.removeprefix("REVIEW_RESOLUTION_").lower()


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _at(case: payment_pb2.ReviewCase, field: str) -> str:
    if not case.HasField(field):  # type: ignore[arg-type]  # HasField's stub wants a Literal field name
        return ""
    stamp = getattr(case, field)
    return str(stamp.ToDatetime().isoformat(timespec="seconds"))


async def list_cases(settings: Settings, console: Console, *, resolved: bool, limit: int) -> None:
    """Prints open (or resolved) cases, oldest first; overdue ones are marked."""
    status = (
        payment_pb2.REVIEW_CASE_STATUS_RESOLVED if resolved else payment_pb2.REVIEW_CASE_STATUS_OPEN
    )
    cases: list[payment_pb2.ReviewCase] = []
    token = ""
    async with _reviews(settings, console) as stub:
        while len(cases) < limit:
            page = await stub.ListReviewCases(
                payment_pb2.ListReviewCasesRequest(
                    status=status, page_size=min(100, limit - len(cases)), page_token=token
                ),
                timeout=RPC_TIMEOUT_S,
            )
            cases.extend(page.cases)
            token = page.next_page_token
            if not token:
                break
    title = f"{'resolved' if resolved else 'open'} review cases: {len(cases)}"
    table = Table(title=title, title_justify="left")
    for column in ("case", "payment", "reason code", "opened", "age", "state", "reason"):
        table.add_column(column)
    for case in cases:
        state = "[red]OVERDUE[/red]" if case.overdue else _case_status(case.status)
        if case.resolution:
            state = f"{state}: {_resolution(case.resolution)}"
        table.add_row(
            case.case_id,
            case.payment_id,
            case.reason_code,
            _at(case, "opened_at"),
            _age(case.age_seconds),
            state,
            escape(case.reason),
        )
    console.print(table)


async def show_case(settings: Settings, console: Console, case_id: str) -> None:
    """Prints a case, its evidence, its payment and the payment's audit trail."""
    async with _reviews(settings, console) as stub:
        found = await stub.GetReviewCase(
            payment_pb2.GetReviewCaseRequest(case_id=case_id), timeout=RPC_TIMEOUT_S
        )
    case, payment = found.review_case, found.payment
    amount = Money(payment.amount.amount_minor, payment.amount.currency)
    overdue = "  [red]OVERDUE[/red]" if case.overdue else ""
    console.print(f"review case [bold]{case.case_id}[/]{overdue}")
    console.print(f"  status       {_case_status(case.status)}")
    console.print(f"  reason code  {case.reason_code}")
    console.print(f"  reason       {escape(case.reason)}")
    console.print(f"  opened       {_at(case, 'opened_at')} ({_age(case.age_seconds)})")
    if case.resolution:
        console.print(f"  resolution   {_resolution(case.resolution)} by {case.resolved_by}")
        console.print(f"  resolved     {_at(case, 'resolved_at')}")
        console.print(f"  note         {escape(case.note)}")
    console.print(f"payment [bold]{payment.payment_id}[/]")
    console.print(f"  kind         {payment_pb2.PaymentKind.Name(payment.kind)}")
    console.print(f"  status       {status_name(payment.status)}")
    console.print(f"  amount       {amount}")
    console.print(f"  account      {payment.destination_account_id or payment.source_account_id}")
    console.print(f"  gateway op   {payment.gateway_operation_id or '-'}")
    evidence = Table(title="evidence", title_justify="left")
    for column in ("at", "reason code", "source", "reason"):
        evidence.add_column(column)
    for item in case.evidence:
        at = item.occurred_at.ToDatetime().isoformat(timespec="seconds")
        evidence.add_row(at, item.reason_code, item.source, escape(item.reason))
    console.print(evidence)
    trail = Table(title="audit trail", title_justify="left")
    for column in ("step", "event", "at", "data", "error"):
        trail.add_column(column)
    for step in found.steps:
        trail.add_row(
            str(step.step),
            step.event_type,
            step.occurred_at.ToDatetime().isoformat(timespec="seconds"),
            escape(", ".join(f"{k}={v}" for k, v in sorted(step.data.items()))),
            escape(step.error),
        )
    console.print(trail)


async def resolve_case(
    settings: Settings,
    console: Console,
    case_id: str,
    *,
    resolution: ResolveAs,
    note: str,
    operator: str | None,
) -> None:
    """Resolves as `operator` (a minted token's subject; PAYSUITE_TOKEN's own subject when
    that is set): the service records the verified caller as who decided."""
    async with _reviews(settings, console, operator) as stub:
        case = await stub.ResolveReviewCase(
            payment_pb2.ResolveReviewCaseRequest(
                case_id=case_id,
                resolution=_RESOLUTION[resolution],
                note=note,
            ),
            timeout=RPC_TIMEOUT_S,
        )
    console.print(
        f"resolved review case [bold]{case.case_id}[/] as {_resolution(case.resolution)}"
        f" (payment {case.payment_id}) by {case.resolved_by}"
    )
