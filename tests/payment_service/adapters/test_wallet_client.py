"""WalletClient.credit over a scripted stub: concurrent credits go in Credits batches, each
caller answered with its own transaction or its own error, translated as the unary call's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
    NotFound,
    ValidationError,
)
from common.grpc.client import translate_item_status, translate_rpc_error
from common.grpc.errors import status_message
from common.logging import bound_flow
from common.money import Money
from payment_service.adapters.clients import WalletClient
from paysuite.wallet.v1 import wallet_pb2

W = wallet_pb2
OK = grpc.StatusCode.OK.value[0]


class AccountFrozen(FailedPrecondition):
    """The wallet's refusal of a frozen account, as it reaches us (a specific reason)."""

    reason = "ACCOUNT_FROZEN"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is frozen")


def rpc_error(
    code: grpc.StatusCode, details: str = "", status: bytes = b""
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status)) if status else None
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)


def transaction(request: W.CreditRequest) -> W.LedgerTransaction:
    return W.LedgerTransaction(
        transaction_id=f"txn-{request.operation_ref}", operation_ref=request.operation_ref
    )


class Stub:
    """Credits and Credit as scripted: `answer` maps a credit to its result (default OK)."""

    def __init__(self) -> None:
        self.batches: list[list[W.CreditRequest]] = []
        self.unary: list[W.CreditRequest] = []
        self.timeouts: list[float] = []
        self.answer: Callable[[W.CreditRequest], W.CreditResult] = lambda r: W.CreditResult(
            status=status_pb2.Status(code=OK), transaction=transaction(r)
        )
        self.fail_with: grpc.aio.AioRpcError | None = None
        self.unary_fail_with: grpc.aio.AioRpcError | None = None
        self.gate: asyncio.Event | None = None
        self.results_dropped = 0

    async def Credits(self, request: W.CreditsRequest, **options: Any) -> W.CreditsResponse:
        self.batches.append(list(request.credits))
        self.timeouts.append(options["timeout"])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        results = [self.answer(credit) for credit in request.credits]
        return W.CreditsResponse(results=results[self.results_dropped :])

    async def Credit(self, request: W.CreditRequest, **options: Any) -> W.LedgerTransaction:
        self.unary.append(request)
        if self.unary_fail_with is not None:
            raise self.unary_fail_with
        return transaction(request)


@pytest.fixture
def stub() -> Stub:
    return Stub()


@pytest.fixture
async def client(stub: Stub) -> WalletClient:
    # The channel is never used: the stub replaces the generated one.
    wallet = WalletClient(grpc.aio.insecure_channel("127.0.0.1:1"), timeout_s=5.0, max_batch=3)
    wallet._stub = stub  # type: ignore[assignment]
    return wallet


async def credit(client: WalletClient, n: int) -> None:
    await client.credit(
        operation_ref=f"pay-{n}:credit", account_id=f"acc-{n}", amount=Money(1250, "EUR")
    )


def refs(batch: list[W.CreditRequest]) -> list[str]:
    return [c.operation_ref for c in batch]


async def test_a_lone_credit_is_a_batch_of_one_sent_at_once(
    client: WalletClient, stub: Stub
) -> None:
    await asyncio.wait_for(credit(client, 1), 1.0)

    assert [refs(batch) for batch in stub.batches] == [["pay-1:credit"]]
    (sent,) = stub.batches[0]
    assert (sent.account_id, sent.amount.amount_minor, sent.amount.currency) == (
        "acc-1",
        1250,
        "EUR",
    )
    assert sent.description == "deposit"
    assert stub.unary == []
    assert 4.0 < stub.timeouts[0] <= 5.0


async def test_credits_asked_while_one_call_is_in_flight_go_together_in_the_next(
    client: WalletClient, stub: Stub
) -> None:
    stub.gate = asyncio.Event()
    first = asyncio.create_task(credit(client, 0))
    await asyncio.sleep(0.01)  # the first call is in flight
    rest = [asyncio.create_task(credit(client, n)) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    stub.gate.set()

    await asyncio.gather(first, *rest)

    assert [len(batch) for batch in stub.batches] == [1, 3, 2]  # at most max_batch=3 a call
    assert sorted(ref for batch in stub.batches for ref in refs(batch)) == [
        f"pay-{n}:credit" for n in range(6)
    ]
    assert stub.unary == []


async def test_each_caller_gets_its_own_error(client: WalletClient, stub: Stub) -> None:
    def answer(request: W.CreditRequest) -> W.CreditResult:
        if request.operation_ref == "pay-1:credit":
            _, _, status = status_message(AccountFrozen("acc-1"), "req-1")
            return W.CreditResult(status=status)
        if request.operation_ref == "pay-2:credit":
            _, _, status = status_message(DependencyUnavailable("database down"), "req-1")
            return W.CreditResult(status=status)
        return W.CreditResult(status=status_pb2.Status(code=OK), transaction=transaction(request))

    stub.answer = answer

    outcomes = await asyncio.gather(*(credit(client, n) for n in range(3)), return_exceptions=True)

    assert len(stub.batches) == 1
    assert outcomes[0] is None
    assert type(outcomes[1]) is FailedPrecondition
    assert outcomes[1].reason == AccountFrozen.reason  # the wallet's reason, passed on
    assert isinstance(outcomes[2], DependencyUnavailable)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_failed_call_fails_every_credit_in_it_as_unavailable(
    client: WalletClient, stub: Stub, code: grpc.StatusCode
) -> None:
    stub.fail_with = rpc_error(code, "gone")

    outcomes = await asyncio.gather(*(credit(client, n) for n in range(3)), return_exceptions=True)

    assert all(isinstance(o, DependencyUnavailable) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) == 3  # each caller its own exception
    assert stub.unary == []


async def test_a_wallet_without_credits_gets_unary_calls_for_good(
    client: WalletClient, stub: Stub
) -> None:
    stub.fail_with = rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    await asyncio.gather(*(credit(client, n) for n in range(2)))
    await credit(client, 2)

    assert len(stub.batches) == 1  # never asked again
    assert sorted(c.operation_ref for c in stub.unary) == [f"pay-{n}:credit" for n in range(3)]


async def test_a_unary_fallback_fails_as_the_unary_call(client: WalletClient, stub: Stub) -> None:
    stub.fail_with = rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    stub.unary_fail_with = rpc_error(grpc.StatusCode.UNAVAILABLE, "gone")

    with pytest.raises(DependencyUnavailable):
        await credit(client, 0)


async def test_an_answer_that_does_not_match_the_batch_sends_each_credit_alone(
    client: WalletClient, stub: Stub
) -> None:
    stub.results_dropped = 1

    await asyncio.gather(*(credit(client, n) for n in range(2)))

    assert sorted(c.operation_ref for c in stub.unary) == ["pay-0:credit", "pay-1:credit"]


async def test_each_credit_carries_its_callers_trace_and_correlation_id(
    client: WalletClient, stub: Stub
) -> None:
    async def traced(n: int) -> str:
        with tracing.tracer().start_as_current_span(f"flow {n}"), bound_flow(f"pay-{n}"):
            await credit(client, n)
            return tracing.current_trace_id()

    trace_ids = await asyncio.gather(*(traced(n) for n in range(3)))

    (batch,) = stub.batches
    assert [c.traceparent.split("-")[1] for c in batch] == trace_ids
    assert len(set(trace_ids)) == 3
    assert [c.correlation_id for c in batch] == ["pay-0", "pay-1", "pay-2"]


ERRORS: list[DomainError] = [
    ValidationError(FieldViolation("amount", "is required")),
    NotFound("account", "acc-1"),
    IdempotencyConflict("operation_ref reused with another request"),
    AccountFrozen("acc-1"),
    DependencyUnavailable("database down"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_items_status_translates_as_the_same_status_ending_a_call(error: DomainError) -> None:
    code, message, status = status_message(error, "req-1")
    unary = translate_rpc_error(
        rpc_error(code, message, status.SerializeToString()), service="wallet"
    )

    item = translate_item_status(status, service="wallet")

    assert type(item) is type(unary)
    assert (str(item), item.reason) == (str(unary), unary.reason)
    assert getattr(item, "metadata", None) == getattr(unary, "metadata", None)
