"""GatewayClient.charge and .payout over a scripted stub: concurrent charges (payouts) go in
Charges (Payouts) batches, each caller answered with its own operation or its own error,
translated as the unary call's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from common import tracing
from common.errors import (
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    ValidationError,
)
from common.grpc.client import translate_item_status, translate_rpc_error
from common.grpc.errors import status_message
from common.logging import bound_flow
from common.money import Money
from payment_service.adapters.clients import GatewayClient
from payment_service.domain.saga import ProviderAnswer
from paysuite.gateway.v1 import gateway_pb2

G = gateway_pb2
OK = grpc.StatusCode.OK.value[0]


def rpc_error(
    code: grpc.StatusCode, details: str = "", status: bytes = b""
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status)) if status else None
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)


Item = G.ChargeRequest | G.PayoutRequest
Answer = tuple[status_pb2.Status, G.Operation | None]


def operation(request: Item) -> G.Operation:
    return G.Operation(
        operation_id=f"op-{request.idempotency_key}",
        status=G.OPERATION_STATUS_PENDING,
        idempotency_key=request.idempotency_key,
    )


class Stub:
    """Charges/Charge and Payouts/Payout as scripted: `answer` maps an item to its status and
    operation (default OK)."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.unary: list[Item] = []
        self.timeouts: list[float] = []
        self.answer: Callable[[Item], Answer] = lambda r: (status_pb2.Status(code=OK), operation(r))
        self.fail_with: grpc.aio.AioRpcError | None = None
        self.gate: asyncio.Event | None = None
        self.results_dropped = 0

    async def _batch(self, items: list[Item], timeout_s: float) -> list[Answer]:
        self.batches.append(items)
        self.timeouts.append(timeout_s)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [self.answer(item) for item in items][self.results_dropped :]

    async def Charges(self, request: G.ChargesRequest, **options: Any) -> G.ChargesResponse:
        results = await self._batch(list(request.charges), options["timeout"])
        return G.ChargesResponse(
            results=[G.ChargeResult(status=s, operation=o) for s, o in results]
        )

    async def Payouts(self, request: G.PayoutsRequest, **options: Any) -> G.PayoutsResponse:
        results = await self._batch(list(request.payouts), options["timeout"])
        return G.PayoutsResponse(
            results=[G.PayoutResult(status=s, operation=o) for s, o in results]
        )

    async def Charge(self, request: G.ChargeRequest, **options: Any) -> G.Operation:
        self.unary.append(request)
        return operation(request)

    async def Payout(self, request: G.PayoutRequest, **options: Any) -> G.Operation:
        self.unary.append(request)
        return operation(request)


@pytest.fixture
def stub() -> Stub:
    return Stub()


@pytest.fixture
async def client(stub: Stub) -> GatewayClient:
    # The channel is never used: the stub replaces the generated one.
    gateway = GatewayClient(grpc.aio.insecure_channel("127.0.0.1:1"), timeout_s=5.0, max_batch=3)
    gateway._stub = stub  # type: ignore[assignment]
    return gateway


@pytest.fixture(params=["charge", "payout"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which of the client's coalesced calls a test sends: each test runs for both."""
    value: str = request.param
    return value


Send = Callable[[int], Awaitable[Any]]


@pytest.fixture
def send(client: GatewayClient, kind: str) -> Send:
    """Sends the charge (payout) of payment pay-<n>; its key is pay-<n>:<kind>."""

    async def one(n: int) -> Any:
        key, reference, amount = f"pay-{n}:{kind}", f"pay-{n}", Money(1250, "EUR")
        if kind == "charge":
            return await client.charge(
                idempotency_key=key, amount=amount, payment_method="pm_visa", reference=reference
            )
        return await client.payout(
            idempotency_key=key, amount=amount, destination="acct_1", reference=reference
        )

    return one


async def test_a_lone_item_is_a_batch_of_one_sent_at_once(
    send: Send, stub: Stub, kind: str
) -> None:
    result = await asyncio.wait_for(send(1), 1.0)

    assert [[c.idempotency_key for c in batch] for batch in stub.batches] == [[f"pay-1:{kind}"]]
    assert result.operation_id == f"op-pay-1:{kind}"
    assert result.answer is ProviderAnswer.ACCEPTED
    assert stub.unary == []
    assert 4.0 < stub.timeouts[0] <= 5.0


async def test_charges_and_payouts_go_in_batches_of_their_own(
    client: GatewayClient, stub: Stub
) -> None:
    amount = Money(1250, "EUR")
    await asyncio.gather(
        client.charge(
            idempotency_key="pay-1:charge", amount=amount, payment_method="pm", reference="pay-1"
        ),
        client.payout(
            idempotency_key="pay-2:payout", amount=amount, destination="acct", reference="pay-2"
        ),
    )

    assert sorted(type(item).__name__ for batch in stub.batches for item in batch) == [
        "ChargeRequest",
        "PayoutRequest",
    ]
    assert len(stub.batches) == 2


async def test_items_asked_while_one_call_is_in_flight_go_together_in_the_next(
    send: Send, stub: Stub, kind: str
) -> None:
    stub.gate = asyncio.Event()
    first = asyncio.create_task(send(0))
    await asyncio.sleep(0.01)  # the first call is in flight
    rest = [asyncio.create_task(send(n)) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    stub.gate.set()

    results = await asyncio.gather(first, *rest)

    sizes = [len(batch) for batch in stub.batches]
    assert sizes == [1, 3, 2]  # at most max_batch=3 a call
    assert [r.operation_id for r in results] == [f"op-pay-{n}:{kind}" for n in range(6)]


async def test_each_caller_gets_its_own_error(send: Send, stub: Stub, kind: str) -> None:
    def answer(request: Item) -> Answer:
        if request.reference == "pay-1":
            _, _, status = status_message(
                ValidationError(FieldViolation("amount", "is required")), "req-1"
            )
            return status, None
        if request.reference == "pay-2":
            _, _, status = status_message(DependencyUnavailable("no provider"), "req-1")
            return status, None
        return status_pb2.Status(code=OK), operation(request)

    stub.answer = answer

    outcomes = await asyncio.gather(*(send(n) for n in range(3)), return_exceptions=True)

    assert len(stub.batches) == 1
    assert outcomes[0].operation_id == f"op-pay-0:{kind}"
    assert type(outcomes[1]) is FailedPrecondition  # INVALID_ARGUMENT, as the unary call's
    assert "amount" in str(outcomes[1])
    assert isinstance(outcomes[2], DependencyUnavailable)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_failed_call_fails_every_item_in_it_as_unavailable(
    send: Send, stub: Stub, code: grpc.StatusCode
) -> None:
    stub.fail_with = rpc_error(code, "gone")

    outcomes = await asyncio.gather(*(send(n) for n in range(3)), return_exceptions=True)

    assert all(isinstance(o, DependencyUnavailable) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) == 3  # each caller its own exception
    assert stub.unary == []


async def test_a_gateway_without_the_batch_call_gets_unary_calls_for_good(
    send: Send, stub: Stub, kind: str
) -> None:
    stub.fail_with = rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    first = await asyncio.gather(*(send(n) for n in range(2)))
    later = await send(2)

    assert [r.operation_id for r in [*first, later]] == [f"op-pay-{n}:{kind}" for n in range(3)]
    assert len(stub.batches) == 1  # never asked again
    assert sorted(c.reference for c in stub.unary) == ["pay-0", "pay-1", "pay-2"]


async def test_an_answer_that_does_not_match_the_batch_sends_each_item_alone(
    send: Send, stub: Stub, kind: str
) -> None:
    stub.results_dropped = 1

    results = await asyncio.gather(*(send(n) for n in range(2)))

    assert [r.operation_id for r in results] == [f"op-pay-0:{kind}", f"op-pay-1:{kind}"]
    assert sorted(c.reference for c in stub.unary) == ["pay-0", "pay-1"]


async def test_each_item_carries_its_callers_trace_and_correlation_id(
    send: Send, stub: Stub
) -> None:
    async def traced(n: int) -> str:
        with tracing.tracer().start_as_current_span(f"flow {n}"), bound_flow(f"pay-{n}"):
            await send(n)
            return tracing.current_trace_id()

    trace_ids = await asyncio.gather(*(traced(n) for n in range(3)))

    (batch,) = stub.batches
    assert [c.traceparent.split("-")[1] for c in batch] == trace_ids
    assert len(set(trace_ids)) == 3
    assert [c.correlation_id for c in batch] == ["pay-0", "pay-1", "pay-2"]


ERRORS: list[DomainError] = [
    ValidationError(FieldViolation("amount.currency", "unknown currency")),
    NotFound("operation", "op-1"),
    IdempotencyConflict("key reused with another request"),
    FailedPrecondition("breaker open"),
    InsufficientFunds("not enough"),
    DependencyUnavailable("database down"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_items_status_translates_as_the_same_status_ending_a_call(error: DomainError) -> None:
    code, message, status = status_message(error, "req-1")
    unary = translate_rpc_error(
        rpc_error(code, message, status.SerializeToString()), service="gateway"
    )

    item = translate_item_status(status, service="gateway")

    assert type(item) is type(unary)
    assert (str(item), item.reason) == (str(unary), unary.reason)
    assert getattr(item, "metadata", None) == getattr(unary, "metadata", None)
