"""The chaos clients' two doors into the suite: the public gRPC API and the HTTP facade.

Each call becomes one `Call` record, whatever happens: an answer, a refusal, a timeout or a
broken connection (all mapped to a gRPC status code name, so both doors read alike).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from chaos.history import OK, Call
from common.grpc.client import error_info
from common.grpc.retry_info import retry_delay_s
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc

CALL_TIMEOUT_S = 5.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
# The facade's statuses (webhook_adapter.facade), back to the gRPC code they mirror;
# 409 carries its code in the body (ALREADY_EXISTS or ABORTED).
CODE_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    422: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def status_name(value: int) -> str:
    name = payment_pb2.PaymentStatus.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("PAYMENT_STATUS_").lower()


@dataclass(frozen=True, slots=True)
class Request:
    """One create call, whichever door it goes through."""

    op: str  # deposit, withdrawal, transfer, refund, cancel
    key: str
    account_id: str = ""  # the source (withdrawal, transfer) or the destination (deposit)
    to_account_id: str = ""
    amount_minor: int = 0  # 0: a full refund
    currency: str = ""
    payment_method: str = ""
    destination: str = ""
    payment_id: str = ""  # refund and cancel

    def text(self) -> str:
        """Canonical: two requests with one key are the same request iff their texts are."""
        fields = dataclasses.asdict(self)
        del fields["key"]
        return json.dumps(fields, sort_keys=True)


Clock = Callable[[], float]
# outcome, ErrorInfo reason, payment id, payment status, detail
Answer = tuple[str, str, str, str, str]


class Api:
    def __init__(
        self,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        http: aiohttp.ClientSession,
        *,
        facade_url: str,
        token: str,
        clock: Clock,
    ) -> None:
        self._payments = payments
        self._http = http
        self._facade = facade_url
        self._token = token
        self._clock = clock

    async def send(self, client: int, request: Request, *, via: str, reuses_key: bool) -> Call:
        started = self._clock()
        if via == "http" and request.op in ("deposit", "withdrawal", "transfer"):
            answer, retry_after_s = await self._http_call(request)
        else:
            via = "grpc"
            answer, retry_after_s = await self._grpc_call(request)
        outcome, reason, payment_id, status, detail = answer
        return Call(
            client=client,
            op=request.op,
            via=via,
            key=request.key,
            request=request.text(),
            started=started,
            ended=self._clock(),
            outcome=outcome,
            reason=reason,
            payment_id=payment_id,
            status=status,
            reuses_key=reuses_key,
            detail=detail,
            retry_after_s=retry_after_s,
        )

    # --- gRPC ------------------------------------------------------------------------------

    async def _grpc_call(self, request: Request) -> tuple[Answer, float | None]:
        """The answer, and the RetryInfo delay a refusal carried (admission control)."""
        try:
            payment = await self._grpc_method(request)(timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            answer = (exc.code().name, error_info(exc)[0], "", "", exc.details() or "")
            return answer, retry_delay_s(exc)
        return (OK, "", payment.payment_id, status_name(payment.status), ""), None

    def _grpc_method(self, r: Request) -> Callable[..., Awaitable[payment_pb2.Payment]]:
        stub = self._payments
        money = money_pb2.Money(amount_minor=r.amount_minor, currency=r.currency)
        if r.op == "deposit":
            message: Any = payment_pb2.CreateDepositRequest(
                idempotency_key=r.key,
                account_id=r.account_id,
                amount=money,
                payment_method=r.payment_method,
            )
            return lambda **kw: stub.CreateDeposit(message, **kw)
        if r.op == "withdrawal":
            message = payment_pb2.CreateWithdrawalRequest(
                idempotency_key=r.key,
                account_id=r.account_id,
                amount=money,
                destination=r.destination,
            )
            return lambda **kw: stub.CreateWithdrawal(message, **kw)
        if r.op == "transfer":
            message = payment_pb2.CreateTransferRequest(
                idempotency_key=r.key,
                source_account_id=r.account_id,
                destination_account_id=r.to_account_id,
                amount=money,
            )
            return lambda **kw: stub.CreateTransfer(message, **kw)
        if r.op == "refund":
            message = payment_pb2.RefundPaymentRequest(
                idempotency_key=r.key,
                payment_id=r.payment_id,
                amount=money if r.amount_minor else None,
            )
            return lambda **kw: stub.RefundPayment(message, **kw)
        message = payment_pb2.CancelPaymentRequest(payment_id=r.payment_id)
        return lambda **kw: stub.CancelPayment(message, **kw)

    # --- HTTP ------------------------------------------------------------------------------

    async def _http_call(self, r: Request) -> tuple[Answer, float | None]:
        """The answer, and the Retry-After of a 429 (admission control)."""
        path, body = _http_route(r)
        headers = {"Authorization": f"Bearer {self._token}", "Idempotency-Key": r.key}
        try:
            async with self._http.post(
                f"{self._facade}{path}", json=body, headers=headers, timeout=HTTP_TIMEOUT
            ) as response:
                status = response.status
                text = await response.text()
                retry_after = response.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ("UNAVAILABLE", "", "", "", type(exc).__name__), None
        return _http_answer(status, text), float(retry_after) if retry_after.isdigit() else None


def _http_route(r: Request) -> tuple[str, dict[str, Any]]:
    amount = {"amount_minor": r.amount_minor, "currency": r.currency}
    if r.op == "deposit":
        return f"/account/{r.account_id}/deposit", {**amount, "payment_method": r.payment_method}
    if r.op == "withdrawal":
        return f"/account/{r.account_id}/withdraw", {**amount, "destination": r.destination}
    return f"/account/{r.account_id}/transfer", {**amount, "to_account_id": r.to_account_id}


def _http_answer(status: int, text: str) -> Answer:
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status in (200, 202):
        return OK, "", str(body.get("transaction_id", "")), str(body.get("status", "")), ""
    error = body.get("error")
    if not isinstance(error, dict):
        error = {}
    code = CODE_BY_HTTP.get(status, "UNKNOWN")
    if status == 409:
        code = str(error.get("code", "aborted")).upper()
    return code, str(error.get("reason", "")), "", "", f"HTTP {status} {text[:200]}"


def monotonic_since(start: float) -> Clock:
    return lambda: time.monotonic() - start
