"""The servicer on a real gRPC server (port 0, the shared interceptor) over the in-memory fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from common.grpc.auth import bearer_channel
from common.grpc.server import create_server
from common.ids import new_id
from gateway_service.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, GatewayServicer
from gateway_service.service_layer.gateway import GatewayService
from paysuite.common.v1 import money_pb2
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.gateway_service.conftest import PAYMENT_METHOD, FakeProvider, provider_event_body
from tests.tokens import make_authenticator, make_token

if TYPE_CHECKING:
    from paysuite.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as Stub


@pytest.fixture
async def stub(service: GatewayService) -> AsyncIterator[Stub]:
    servicer = GatewayServicer(service)
    server, port, _ = create_server(
        "127.0.0.1:0",
        registrars=[lambda s: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        auth=make_authenticator(POLICY),
    )
    await server.start()
    async with bearer_channel(f"127.0.0.1:{port}", make_token()) as grpc_channel:
        yield gateway_pb2_grpc.GatewayServiceStub(grpc_channel)
    await server.stop(None)


def charge_request(**changes: object) -> gateway_pb2.ChargeRequest:
    request = gateway_pb2.ChargeRequest(
        idempotency_key="pay-1:charge",
        amount=money_pb2.Money(amount_minor=1250, currency="EUR"),
        payment_method=PAYMENT_METHOD,
        reference="pay-1",
    )
    return _changed(request, changes)


def payout_request(**changes: object) -> gateway_pb2.PayoutRequest:
    request = gateway_pb2.PayoutRequest(
        idempotency_key="pay-1:payout",
        amount=money_pb2.Money(amount_minor=1250, currency="EUR"),
        destination="acct_1",
        reference="pay-1",
    )
    return _changed(request, changes)


def _changed(request: Any, changes: dict[str, object]) -> Any:
    for name, value in changes.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]  # the stubs want a literal field name
        elif isinstance(value, money_pb2.Money):
            request.amount.CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


async def test_charge_returns_the_pending_operation(
    stub: Stub, fake_provider: FakeProvider
) -> None:
    operation = await stub.Charge(charge_request())

    assert operation.kind == gateway_pb2.OPERATION_KIND_CHARGE
    assert operation.status == gateway_pb2.OPERATION_STATUS_PENDING
    assert (operation.amount.amount_minor, operation.amount.currency) == (1250, "EUR")
    assert (operation.reference, operation.idempotency_key) == ("pay-1", "pay-1:charge")
    assert operation.provider == "sim-primary"
    assert operation.provider_reference == fake_provider.references["pay-1:charge"]
    assert PAYMENT_METHOD.encode() not in operation.SerializeToString()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": None}, "amount"),
        ({"amount": money_pb2.Money(amount_minor=0, currency="EUR")}, "amount.amount_minor"),
        ({"amount": money_pb2.Money(amount_minor=5, currency="XXX")}, "amount.currency"),
        ({"idempotency_key": ""}, "idempotency_key"),
    ],
)
async def test_an_invalid_charge_is_invalid_argument(
    stub: Stub, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Charge(charge_request(**changes))

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")


async def test_a_reused_key_is_already_exists(stub: Stub) -> None:
    await stub.Charge(charge_request())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Charge(charge_request(reference="pay-2"))

    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_get_operation_finds_the_charge(stub: Stub) -> None:
    charged = await stub.Charge(charge_request())

    found = await stub.GetOperation(
        gateway_pb2.GetOperationRequest(operation_id=charged.operation_id)
    )

    assert [h.status for h in found.history] == [
        gateway_pb2.OPERATION_STATUS_CREATED,
        gateway_pb2.OPERATION_STATUS_PENDING,
    ]
    del found.history[:]
    assert found == charged


@pytest.mark.parametrize(
    ("operation_id", "code"),
    [(new_id(), grpc.StatusCode.NOT_FOUND), ("nope", grpc.StatusCode.INVALID_ARGUMENT)],
)
async def test_get_operation_errors(stub: Stub, operation_id: str, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOperation(gateway_pb2.GetOperationRequest(operation_id=operation_id))

    assert caught.value.code() is code


async def test_handle_provider_event_settles_once(stub: Stub) -> None:
    charged = await stub.Charge(charge_request())
    request = gateway_pb2.HandleProviderEventRequest(
        provider="sim-primary",
        provider_event_id="evt_1",
        event_type="charge.succeeded",
        provider_reference=charged.provider_reference,
        raw_payload=provider_event_body(
            charged.provider_reference, charged.operation_id, "charge.succeeded"
        ),
        operation_id=charged.operation_id,
        amount=charged.amount,
    )
    request.occurred_at.GetCurrentTime()

    first = await stub.HandleProviderEvent(request)
    again = await stub.HandleProviderEvent(request)

    assert (first.first_delivery, first.operation_id) == (True, charged.operation_id)
    assert (again.first_delivery, again.operation_id) == (False, charged.operation_id)
    found = await stub.GetOperation(
        gateway_pb2.GetOperationRequest(operation_id=charged.operation_id)
    )
    assert found.status == gateway_pb2.OPERATION_STATUS_SUCCEEDED


async def test_payout_refund_and_sync(stub: Stub) -> None:
    payout = await stub.Payout(
        gateway_pb2.PayoutRequest(
            idempotency_key="pay-9:payout",
            amount=money_pb2.Money(amount_minor=500, currency="EUR"),
            destination="acct_1",
            reference="pay-9",
        )
    )
    assert (payout.kind, payout.status) == (
        gateway_pb2.OPERATION_KIND_PAYOUT,
        gateway_pb2.OPERATION_STATUS_PENDING,
    )
    synced = await stub.SyncOperation(
        gateway_pb2.SyncOperationRequest(operation_id=payout.operation_id)
    )
    assert synced.status == gateway_pb2.OPERATION_STATUS_PENDING

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Refund(
            gateway_pb2.RefundRequest(
                idempotency_key="pay-9:refund",
                charge_operation_id=payout.operation_id,
                amount=money_pb2.Money(amount_minor=500, currency="EUR"),
                reference="pay-9",
            )
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_get_provider_status_lists_every_breaker_in_order(stub: Stub) -> None:
    response = await stub.GetProviderStatus(gateway_pb2.GetProviderStatusRequest())

    assert [(p.provider, p.breaker_state, p.priority) for p in response.providers] == [
        ("sim-primary", "closed", 0),
        ("sim-secondary", "closed", 1),
    ]


async def test_handle_provider_events_answers_each_event_on_its_own(stub: Stub) -> None:
    charged = await stub.Charge(charge_request())

    def event(event_id: str, **changes: Any) -> gateway_pb2.HandleProviderEventRequest:
        fields: dict[str, Any] = {
            "provider": "sim-primary",
            "provider_event_id": event_id,
            "event_type": "charge.succeeded",
            "provider_reference": charged.provider_reference,
            "raw_payload": b"{}",
            "operation_id": charged.operation_id,
            **changes,
        }
        return gateway_pb2.HandleProviderEventRequest(**fields)

    response = await stub.HandleProviderEvents(
        gateway_pb2.HandleProviderEventsRequest(
            events=[
                event("evt_a"),
                event("evt_b", provider="acme"),
                event("evt_c", amount=money_pb2.Money(amount_minor=1, currency="ZZ")),
                event("evt_a"),
            ]
        )
    )

    codes = [r.code for r in response.results]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert codes == [0, invalid, invalid, 0]
    assert [r.response.first_delivery for r in response.results] == [True, False, False, False]
    assert response.results[0].response.outcome == "applied"


def _unary_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status")


def _without_request_id(status: status_pb2.Status) -> status_pb2.Status:
    """The status with its ErrorInfo's request id dropped (each call has its own)."""
    copy = status_pb2.Status()
    copy.CopyFrom(status)
    for detail in copy.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            del info.metadata["request_id"]
            detail.Pack(info)
    return copy


class Batch(NamedTuple):
    """A batch call that opens operations (Charges, Payouts) beside its unary call."""

    unary: str  # "Charge"
    item: Callable[..., Any]  # charge_request
    field: str  # the request's repeated field: "charges"
    kind: gateway_pb2.OperationKind.ValueType

    def request(self, n: int = 1, **changes: object) -> Any:
        """The item of payment pay-<n>, changed as given."""
        key = f"pay-{n}:{self.unary.lower()}"
        return self.item(**{"idempotency_key": key, "reference": f"pay-{n}", **changes})

    async def call(self, stub: Stub, items: list[Any]) -> Any:
        batch = f"{self.unary}s"
        request = getattr(gateway_pb2, f"{batch}Request")(**{self.field: items})
        return await getattr(stub, batch)(request)


BATCHES = [
    Batch("Charge", charge_request, "charges", gateway_pb2.OPERATION_KIND_CHARGE),
    Batch("Payout", payout_request, "payouts", gateway_pb2.OPERATION_KIND_PAYOUT),
]
batches = pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"{b.unary}s")


@batches
async def test_a_batch_answers_each_item_on_its_own(
    stub: Stub, fake_provider: FakeProvider, batch: Batch
) -> None:
    response = await batch.call(
        stub,
        [
            batch.request(1),
            batch.request(2, amount=None),
            batch.request(3),
            batch.request(1),  # the same key and request: the same operation
        ],
    )

    codes = [r.status.code for r in response.results]
    assert codes == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0, 0]
    first, invalid, third, repeat = response.results
    assert first.operation.status == gateway_pb2.OPERATION_STATUS_PENDING
    assert first.operation.kind == batch.kind
    key = f"pay-1:{batch.unary.lower()}"
    assert first.operation.provider_reference == fake_provider.references[key]
    assert repeat.operation.operation_id == first.operation.operation_id
    assert third.operation.reference == "pay-3"
    assert third.operation.operation_id != first.operation.operation_id
    assert not invalid.HasField("operation")
    violations = error_details_pb2.BadRequest()
    assert any(d.Unpack(violations) for d in invalid.status.details)
    assert [v.field for v in violations.field_violations] == ["amount"]


@batches
@pytest.mark.parametrize(
    "changes",
    [
        {"amount": None},
        {"amount": money_pb2.Money(amount_minor=5, currency="XXX")},
        {"idempotency_key": ""},
        {"reference": "pay-other"},  # the key of pay-1's item, reused: ALREADY_EXISTS
    ],
)
async def test_an_item_in_a_batch_fails_as_its_unary_call_would(
    stub: Stub, batch: Batch, changes: dict[str, object]
) -> None:
    """One table: a batch item's status is the unary call's, code, message and details."""
    unary = getattr(stub, batch.unary)
    await unary(batch.request())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(batch.request(**changes))

    response = await batch.call(stub, [batch.request(**changes)])

    (result,) = response.results
    assert result.status.code == caught.value.code().value[0]
    assert result.status.message == caught.value.details()
    assert _without_request_id(result.status) == _without_request_id(_unary_status(caught.value))


@batches
async def test_an_empty_batch_is_an_empty_answer(stub: Stub, batch: Batch) -> None:
    response = await batch.call(stub, [])

    assert list(response.results) == []
