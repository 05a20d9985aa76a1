"""The HTTP facade of seeds 000 and 001, translated to PaymentService calls.

Served by the webhook adapter process (`python -m webhook_adapter`, :8080), the suite's
one HTTP edge; like the webhook routes it holds no state and talks gRPC only:

    POST /account/{id}/deposit     Idempotency-Key   -> PaymentService.CreateDeposit
    POST /account/{id}/withdraw    Idempotency-Key   -> PaymentService.CreateWithdrawal
    POST /account/{id}/transfer    Idempotency-Key   -> PaymentService.CreateTransfer
    GET  /transaction/{id}/status                    -> PaymentService.GetPayment
    GET  /openapi.json

Every route but /openapi.json needs the caller's `Authorization: Bearer <token>`, which is
passed on to the payment service as it came (401 without one, 403 for another's account).

Errors are JSON (`{"error": {"code", "message", "field"?, "reason"?}}`, `reason` being the
service's stable ErrorInfo reason such as INSUFFICIENT_FUNDS) with the status mirroring the gRPC
code: 400 invalid, 401 no or bad token, 403 not the caller's, 404 not found, 409 conflict,
422 not allowed now (e.g. insufficient funds), 429 overloaded or over the caller's rate limit
(with `Retry-After`: repeat the request, same Idempotency-Key, after that many seconds),
501 not implemented, 503 unavailable. Never 500.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.grpc.auth import AUTHORIZATION
from common.grpc.client import error_info
from common.grpc.retry_info import overload_delay_s
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc

if TYPE_CHECKING:
    from paysuite.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub

MAX_AMOUNT_MINOR = 2**63 - 1
IDEMPOTENCY_HEADER = "Idempotency-Key"

HTTP_BY_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


class FacadeError(Exception):
    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        # The service's ErrorInfo reason (INSUFFICIENT_FUNDS, ...), for callers to branch on.
        self.reason = reason


class TooManyRequests(FacadeError):
    """RESOURCE_EXHAUSTED (admission control): answered 429 with Retry-After, in whole
    seconds rounded up, from the status's RetryInfo."""

    def __init__(self, message: str, reason: str, retry_after_s: int) -> None:
        super().__init__(429, "resource_exhausted", message, reason=reason)
        self.retry_after_s = retry_after_s


Route = Callable[[web.Request], Awaitable[web.Response]]


def _sheds_load(route: Route) -> Route:
    """Answers TooManyRequests itself: the JSON error every refusal has, and the Retry-After
    header only this one needs."""

    @functools.wraps(route)
    async def answer(request: web.Request) -> web.Response:
        try:
            return await route(request)
        except TooManyRequests as exc:
            error = {"code": exc.code, "message": exc.message, "reason": exc.reason}
            return web.json_response(
                {"error": error, "retry_after_s": exc.retry_after_s},
                status=429,
                headers={"Retry-After": str(exc.retry_after_s)},
            )

    return answer


class _Amount(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class DepositBody(_Amount):
    payment_method: str = Field(default="pm_card_ok", min_length=1, max_length=255)


class WithdrawBody(_Amount):
    destination: str = Field(min_length=1, max_length=255)


class TransferBody(_Amount):
    to_account_id: str = Field(min_length=1, max_length=128)


B = TypeVar("B", bound=_Amount)


STATUS_NAMES = {
    value: name.removeprefix("PAYMENT_STATUS_").lower()
    for name, value in payment_pb2.PaymentStatus.items()
}
KIND_NAMES = {
    value: name.removeprefix("PAYMENT_KIND_").lower()
    for name, value in payment_pb2.PaymentKind.items()
}

PAYMENTS = web.AppKey("payments", object)


def _transaction(payment: payment_pb2.Payment) -> dict[str, Any]:
    return {
        "transaction_id": payment.payment_id,
        "kind": KIND_NAMES.get(payment.kind, "unspecified"),
        "status": STATUS_NAMES.get(payment.status, "unspecified"),
        "amount_minor": payment.amount.amount_minor,
        "currency": payment.amount.currency,
        "failure_reason": payment.failure_reason or None,
    }


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise FacadeError(400, "invalid_request", error["msg"], field) from None


def _credentials(request: web.Request) -> tuple[tuple[str, str]]:
    """The caller's own bearer token, passed on as is: the payment service verifies it and
    decides, so the facade can never act as anyone but its caller."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise FacadeError(
            401, "unauthenticated", "an Authorization: Bearer <token> header is required"
        )
    return ((AUTHORIZATION, header),)


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not key:
        raise FacadeError(400, "invalid_request", "the header is required", IDEMPOTENCY_HEADER)
    return key


def _rpc_error(exc: grpc.aio.AioRpcError) -> FacadeError:
    code = exc.code()
    delay = overload_delay_s(exc)
    if delay is not None:
        retry_after = max(1, math.ceil(delay))
        return TooManyRequests(exc.details() or "overloaded", error_info(exc)[0], retry_after)
    status = HTTP_BY_GRPC.get(code, 503)
    message = exc.details() or code.name.lower()
    if status == 501:
        message = "not implemented yet by the payment service"
    if status == 503:
        message = "the payment service is unavailable, retry later"
    reason = error_info(exc)[0] if status != 503 else ""
    return FacadeError(status, code.name.lower(), message, _violated_field(exc), reason)


def _violated_field(exc: grpc.aio.AioRpcError) -> str | None:
    """The first field violation of the rich error details, if the service sent any."""
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request) and bad_request.field_violations:
                return str(bad_request.field_violations[0].field)
    return None


async def _call(call: Any) -> payment_pb2.Payment:
    try:
        payment: payment_pb2.Payment = await call
    except grpc.aio.AioRpcError as exc:
        raise _rpc_error(exc) from None
    return payment


def _stub(request: web.Request) -> PaymentServiceAsyncStub:
    stub: PaymentServiceAsyncStub = request.app[PAYMENTS]  # type: ignore[assignment]  # the app key holds a stub or a test's stand-in, typed object
    return stub


def _money(body: _Amount) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=body.amount_minor, currency=body.currency)


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    # The service's stable ErrorInfo reason, e.g. INSUFFICIENT_FUNDS.
                    "reason": {"type": "string"},
                },
            }
        },
    }


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {str(status): {"description": "error", **ref} for status in statuses}


def _amount_schema(name: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["amount_minor", "currency", *([name] if required else [])],
        "properties": {
            "amount_minor": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT_MINOR},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            name: schema,
        },
    }


CREATE_ERRORS = (400, 401, 403, 404, 409, 422, 429, 503)


def _create(summary: str, body: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "202": {
                    "description": "accepted; the outcome follows asynchronously",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Transaction"}}
                    },
                },
                **_errors(*errors),
            },
        }
    }


@dataclass(frozen=True, slots=True)
class Create(Generic[B]):
    """One create route: its body, the PaymentService method, and the request it sends."""

    action: str  # the path's last segment: /account/{account_id}/<action>
    summary: str
    body: type[B]
    schema: dict[str, Any]  # the body's, in OPENAPI
    method: Callable[[PaymentServiceAsyncStub], Callable[..., Any]]
    # (idempotency key, the path's account id, the validated body) -> the gRPC request
    request: Callable[[str, str, B], Message]


# Each typed on its own, so that mypy checks its request against its body.
DEPOSIT: Create[DepositBody] = Create(
    "deposit",
    "Deposit from a payment method into the account",
    DepositBody,
    _amount_schema(
        "payment_method", {"type": "string", "minLength": 1, "maxLength": 255}, required=False
    ),
    lambda stub: stub.CreateDeposit,
    lambda key, account_id, body: payment_pb2.CreateDepositRequest(
        idempotency_key=key,
        account_id=account_id,
        amount=_money(body),
        payment_method=body.payment_method,
    ),
)
WITHDRAW: Create[WithdrawBody] = Create(
    "withdraw",
    "Withdraw from the account to a destination",
    WithdrawBody,
    _amount_schema(
        "destination", {"type": "string", "minLength": 1, "maxLength": 255}, required=True
    ),
    lambda stub: stub.CreateWithdrawal,
    lambda key, account_id, body: payment_pb2.CreateWithdrawalRequest(
        idempotency_key=key,
        account_id=account_id,
        amount=_money(body),
        destination=body.destination,
    ),
)
TRANSFER: Create[TransferBody] = Create(
    "transfer",
    "Transfer from the account to another account",
    TransferBody,
    _amount_schema(
        "to_account_id", {"type": "string", "minLength": 1, "maxLength": 128}, required=True
    ),
    lambda stub: stub.CreateTransfer,
    lambda key, account_id, body: payment_pb2.CreateTransferRequest(
        idempotency_key=key,
        source_account_id=account_id,
        destination_account_id=body.to_account_id,
        amount=_money(body),
    ),
)
CREATES: tuple[Create[Any], ...] = (DEPOSIT, WITHDRAW, TRANSFER)


def create_handler(create: Create[Any]) -> Route:
    @_sheds_load
    async def handle(request: web.Request) -> web.Response:
        credentials = _credentials(request)
        key = _idempotency_key(request)
        body = await _body(request, create.body)
        payment = await _call(
            create.method(_stub(request))(
                create.request(key, request.match_info["account_id"], body),
                timeout=10,
                metadata=credentials,
            )
        )
        return web.json_response(_transaction(payment), status=202)

    return handle


async def transaction_status(request: web.Request) -> web.Response:
    credentials = _credentials(request)
    payment = await _call(
        _stub(request).GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=request.match_info["transaction_id"]),
            timeout=10,
            metadata=credentials,
        )
    )
    return web.json_response(_transaction(payment))


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def add_routes(app: web.Application, payments: grpc.aio.Channel | PaymentServiceAsyncStub) -> None:
    app[PAYMENTS] = (
        payment_pb2_grpc.PaymentServiceStub(payments)
        if isinstance(payments, grpc.aio.Channel)
        else payments
    )
    for create in CREATES:
        app.router.add_post(f"/account/{{account_id}}/{create.action}", create_handler(create))
    app.router.add_get("/transaction/{transaction_id}/status", transaction_status)
    app.router.add_get("/openapi.json", openapi)


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "paysuite HTTP facade",
        "version": "1.0.0",
        "description": "Seeds 000/001 endpoints over PaymentService; served by the webhook"
        " adapter process. Amounts are integer minor units.",
    },
    "paths": {
        **{
            f"/account/{{id}}/{create.action}": _create(
                create.summary, create.schema, *CREATE_ERRORS
            )
            for create in CREATES
        },
        "/transaction/{id}/status": {
            "get": {
                "summary": "A transaction's current status",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the transaction",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Transaction"}
                            }
                        },
                    },
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {
            "Error": _error_schema(),
            "Transaction": {
                "type": "object",
                "required": ["transaction_id", "kind", "status", "amount_minor", "currency"],
                "properties": {
                    "transaction_id": {"type": "string"},
                    "kind": {"type": "string"},
                    "status": {
                        "type": "string",
                        "enum": sorted(STATUS_NAMES.values()),
                    },
                    "amount_minor": {"type": "integer"},
                    "currency": {"type": "string"},
                    "failure_reason": {"type": ["string", "null"]},
                },
            },
        },
    },
}
