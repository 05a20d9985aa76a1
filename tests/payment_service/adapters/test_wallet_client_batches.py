"""WalletClient.place_hold, capture_hold and transfer over a scripted stub, as credit is in
test_wallet_client.py: concurrent calls go in PlaceHolds, CaptureHolds and Transfers batches,
each caller answered with its own result or its own error, translated as the unary call's
(a refusal such as insufficient funds fails that caller only)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2

from common import tracing
from common.errors import DependencyUnavailable, FailedPrecondition, InsufficientFunds
from common.grpc.client import translate_item_status, translate_rpc_error
from common.grpc.errors import status_message
from common.logging import bound_flow
from common.money import Money
from payment_service.adapters.clients import WalletClient
from paysuite.wallet.v1 import wallet_pb2

W = wallet_pb2
OK = grpc.StatusCode.OK.value[0]


class WalletInsufficientFunds(FailedPrecondition):
    """The wallet's refusal of a hold or transfer beyond the available money (its reason and
    metadata), as the wallet raises it."""

    reason = "INSUFFICIENT_FUNDS"

    def __init__(self, available_minor: int) -> None:
        super().__init__("insufficient funds")
        self.metadata = {"available_minor": str(available_minor), "currency": "EUR"}


def rpc_error(
    code: grpc.StatusCode, details: str = "", status: bytes = b""
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status)) if status else None
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)


@dataclass(frozen=True)
class Kind:
    """One of the three coalesced calls: its batch and unary RPCs and how the client asks it."""

    name: str
    batch_rpc: str
    unary_rpc: str
    items: str  # the batch request's repeated field
    answer_field: str  # the result's answer field
    request_type: type[Message]
    result_type: type[Message]
    response_type: type[Message]
    answer: Callable[[Any], Message]  # the answer to a request
    ask: Callable[[WalletClient, int], Awaitable[object]]  # the client's call for request n


def _hold(request: W.PlaceHoldRequest) -> W.Hold:
    return W.Hold(hold_id=f"hold-{request.operation_ref}", account_id=request.account_id)


def _txn(request: Any) -> W.LedgerTransaction:
    return W.LedgerTransaction(
        transaction_id=f"txn-{request.operation_ref}", operation_ref=request.operation_ref
    )


async def _place_hold(client: WalletClient, n: int) -> object:
    return await client.place_hold(
        operation_ref=f"pay-{n}:hold",
        account_id=f"acc-{n}",
        amount=Money(1250, "EUR"),
        reference=f"pay-{n}",
    )


async def _capture_hold(client: WalletClient, n: int) -> object:
    await client.capture_hold(
        operation_ref=f"pay-{n}:capture", hold_id=f"h-{n}", account_id=f"acc-{n}", provider="sim"
    )
    return None


async def _transfer(client: WalletClient, n: int) -> object:
    return await client.transfer(
        operation_ref=f"pay-{n}:transfer",
        source_account_id=f"acc-{n}",
        destination_account_id=f"dst-{n}",
        amount=Money(1250, "EUR"),
        reference=f"pay-{n}",
    )


KINDS = [
    Kind(
        "hold",
        "PlaceHolds",
        "PlaceHold",
        "holds",
        "hold",
        W.PlaceHoldRequest,
        W.PlaceHoldResult,
        W.PlaceHoldsResponse,
        _hold,
        _place_hold,
    ),
    Kind(
        "capture",
        "CaptureHolds",
        "CaptureHold",
        "captures",
        "transaction",
        W.CaptureHoldRequest,
        W.CaptureHoldResult,
        W.CaptureHoldsResponse,
        _txn,
        _capture_hold,
    ),
    Kind(
        "transfer",
        "Transfers",
        "Transfer",
        "transfers",
        "transaction",
        W.TransferRequest,
        W.TransferResult,
        W.TransfersResponse,
        _txn,
        _transfer,
    ),
]


class Stub:
    """One batch RPC and its unary RPC as scripted: `answer` maps an item to its result."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.batches: list[list[Any]] = []
        self.unary: list[Any] = []
        self.other_calls: list[str] = []
        self.timeouts: list[float] = []
        self.answer: Callable[[Any], Message] = lambda r: kind.result_type(
            status=status_pb2.Status(code=OK), **{kind.answer_field: kind.answer(r)}
        )
        self.fail_with: grpc.aio.AioRpcError | None = None
        self.unary_fail_with: grpc.aio.AioRpcError | None = None
        self.gate: asyncio.Event | None = None
        self.results_dropped = 0

    async def _batch(self, request: Any, **options: Any) -> Message:
        items = list(getattr(request, self.kind.items))
        self.batches.append(items)
        self.timeouts.append(options["timeout"])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        results = [self.answer(item) for item in items]
        return self.kind.response_type(results=results[self.results_dropped :])

    async def _unary(self, request: Any, **options: Any) -> Message:
        self.unary.append(request)
        if self.unary_fail_with is not None:
            raise self.unary_fail_with
        return self.kind.answer(request)

    async def Credits(self, request: W.CreditsRequest, **options: Any) -> W.CreditsResponse:
        self.other_calls.append("Credits")
        return W.CreditsResponse(
            results=[
                W.CreditResult(status=status_pb2.Status(code=OK), transaction=_txn(c))
                for c in request.credits
            ]
        )

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Message]]:
        if name == self.kind.batch_rpc:
            return self._batch
        if name == self.kind.unary_rpc:
            return self._unary
        raise AttributeError(name)


@pytest.fixture(params=KINDS, ids=lambda k: k.name)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def stub(kind: Kind) -> Stub:
    return Stub(kind)


@pytest.fixture
async def client(stub: Stub) -> WalletClient:
    # The channel is never used: the stub replaces the generated one.
    wallet = WalletClient(grpc.aio.insecure_channel("127.0.0.1:1"), timeout_s=5.0, max_batch=3)
    wallet._stub = stub  # type: ignore[assignment]
    return wallet


def refs(batch: list[Any]) -> list[str]:
    return [item.operation_ref for item in batch]


def ref(kind: Kind, n: int) -> str:
    return f"pay-{n}:{kind.name}"


async def test_a_lone_call_is_a_batch_of_one_sent_at_once(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    answer = await asyncio.wait_for(kind.ask(client, 1), 1.0)

    assert [refs(batch) for batch in stub.batches] == [[ref(kind, 1)]]
    (sent,) = stub.batches[0]
    if kind.name == "hold":
        assert (sent.account_id, sent.amount.amount_minor, sent.reference) == (
            "acc-1",
            1250,
            "pay-1",
        )
        assert answer == "hold-pay-1:hold"
    elif kind.name == "capture":
        assert (sent.hold_id, sent.account_id, sent.provider) == ("h-1", "acc-1", "sim")
        assert not sent.HasField("amount")  # the whole hold
        assert answer is None
    else:
        assert (sent.source_account_id, sent.destination_account_id) == ("acc-1", "dst-1")
        assert (sent.amount.amount_minor, sent.amount.currency, sent.reference) == (
            1250,
            "EUR",
            "pay-1",
        )
        assert answer == "txn-pay-1:transfer"
    assert stub.unary == []
    assert 4.0 < stub.timeouts[0] <= 5.0


async def test_calls_made_while_one_is_in_flight_go_together_in_the_next(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    stub.gate = asyncio.Event()
    first = asyncio.create_task(kind.ask(client, 0))
    await asyncio.sleep(0.01)  # the first call is in flight
    rest = [asyncio.create_task(kind.ask(client, n)) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    stub.gate.set()

    answers = await asyncio.gather(first, *rest)

    assert [len(batch) for batch in stub.batches] == [1, 3, 2]  # at most max_batch=3 a call
    assert sorted(r for batch in stub.batches for r in refs(batch)) == [
        ref(kind, n) for n in range(6)
    ]
    if kind.name != "capture":  # each caller its own answer, not another's
        assert all(ref(kind, n) in str(a) for n, a in enumerate(answers))
    assert stub.unary == []


async def test_a_refusal_fails_only_its_own_caller(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    default = stub.answer

    def answer(request: Any) -> Message:
        if request.operation_ref == ref(kind, 1):
            _, _, status = status_message(WalletInsufficientFunds(300), "req-1")
            return kind.result_type(status=status)
        if request.operation_ref == ref(kind, 2):
            _, _, status = status_message(DependencyUnavailable("database down"), "req-1")
            return kind.result_type(status=status)
        return default(request)

    stub.answer = answer

    outcomes = await asyncio.gather(
        *(kind.ask(client, n) for n in range(3)), return_exceptions=True
    )

    assert len(stub.batches) == 1
    assert not isinstance(outcomes[0], BaseException)
    refusal = outcomes[1]
    # The error the saga rejects a withdrawal on at once, as the unary call's would be.
    assert type(refusal) is InsufficientFunds
    assert refusal.reason == "INSUFFICIENT_FUNDS"
    assert refusal.metadata["available_minor"] == "300"
    assert isinstance(outcomes[2], DependencyUnavailable)


async def test_a_refusal_in_a_batch_is_the_same_error_as_the_unary_calls(kind: Kind) -> None:
    code, message, status = status_message(WalletInsufficientFunds(300), "req-1")
    unary = translate_rpc_error(
        rpc_error(code, message, status.SerializeToString()), service="wallet"
    )

    item = translate_item_status(status, service="wallet")

    assert type(item) is type(unary)
    assert (str(item), item.reason) == (str(unary), unary.reason)
    assert getattr(item, "metadata", None) == getattr(unary, "metadata", None)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_failed_call_fails_every_item_in_it_as_unavailable(
    client: WalletClient, stub: Stub, kind: Kind, code: grpc.StatusCode
) -> None:
    stub.fail_with = rpc_error(code, "gone")

    outcomes = await asyncio.gather(
        *(kind.ask(client, n) for n in range(3)), return_exceptions=True
    )

    assert all(isinstance(o, DependencyUnavailable) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) == 3  # each caller its own exception
    assert stub.unary == []


async def test_a_wallet_without_the_batch_call_gets_unary_calls_for_good(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    stub.fail_with = rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    await asyncio.gather(*(kind.ask(client, n) for n in range(2)))
    await kind.ask(client, 2)
    # The other batch calls are coalesced on their own: credits still go as Credits.
    await client.credit(operation_ref="pay-9:credit", account_id="acc-9", amount=Money(1, "EUR"))

    assert len(stub.batches) == 1  # never asked again
    assert sorted(r.operation_ref for r in stub.unary) == [ref(kind, n) for n in range(3)]
    assert stub.other_calls == ["Credits"]


async def test_a_unary_fallback_fails_as_the_unary_call(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    stub.fail_with = rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    stub.unary_fail_with = rpc_error(grpc.StatusCode.UNAVAILABLE, "gone")

    with pytest.raises(DependencyUnavailable):
        await kind.ask(client, 0)


async def test_an_answer_that_does_not_match_the_batch_sends_each_item_alone(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    stub.results_dropped = 1

    await asyncio.gather(*(kind.ask(client, n) for n in range(2)))

    assert sorted(r.operation_ref for r in stub.unary) == [ref(kind, 0), ref(kind, 1)]


async def test_each_item_carries_its_callers_trace_and_correlation_id(
    client: WalletClient, stub: Stub, kind: Kind
) -> None:
    async def traced(n: int) -> str:
        with tracing.tracer().start_as_current_span(f"flow {n}"), bound_flow(f"pay-{n}"):
            await kind.ask(client, n)
            return tracing.current_trace_id()

    trace_ids = await asyncio.gather(*(traced(n) for n in range(3)))

    (batch,) = stub.batches
    assert [item.traceparent.split("-")[1] for item in batch] == trace_ids
    assert len(set(trace_ids)) == 3
    assert [item.correlation_id for item in batch] == ["pay-0", "pay-1", "pay-2"]
