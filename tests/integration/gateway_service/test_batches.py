"""Charges and Payouts on a real gateway over a real gRPC socket (its own PostgreSQL, real
simulators): each item of a batch is answered on its own, as its unary call (Charge, Payout)
would have answered it."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from paysuite.common.v1 import money_pb2
from paysuite.gateway.v1 import gateway_pb2
from tests.integration.gateway_service.conftest import Rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

G = gateway_pb2


def item(unary: str, key: str, *, reference: str = "", amount: bool = True) -> Any:
    """A ChargeRequest or PayoutRequest (as `unary` says) for idempotency key `key`."""
    request: Any = (
        G.ChargeRequest(payment_method="pm_card_visa")
        if unary == "Charge"
        else G.PayoutRequest(destination="acct_1")
    )
    request.idempotency_key, request.reference = key, reference or key
    if amount:
        request.amount.CopyFrom(money_pb2.Money(amount_minor=1250, currency="EUR"))
    return request


@pytest.mark.parametrize("unary", ["Charge", "Payout"])
async def test_each_item_of_a_batch_gets_its_own_answer(rig: Rig, unary: str) -> None:
    await rig.sims.reset()
    run = uuid.uuid4().hex[:8]
    # A unary call, asked again in the batch.
    earlier = await getattr(rig.gateway, unary)(item(unary, f"{run}-earlier"), timeout=5.0)

    items = [
        item(unary, f"{run}-new"),
        item(unary, f"{run}-invalid", amount=False),
        item(unary, f"{run}-earlier"),
        item(unary, f"{run}-earlier", reference="another payment"),
        item(unary, f"{run}-new"),
    ]
    field = "charges" if unary == "Charge" else "payouts"
    batch = getattr(G, f"{unary}sRequest")(**{field: items})
    response = await getattr(rig.gateway, f"{unary}s")(batch, timeout=10.0)

    new, invalid, repeat, conflict, new_again = response.results
    assert [r.status.code for r in response.results] == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.ALREADY_EXISTS.value[0],
        grpc.StatusCode.OK.value[0],
    ]
    assert new.operation.status == G.OPERATION_STATUS_PENDING
    assert new.operation.kind == earlier.kind
    assert new.operation.idempotency_key == f"{run}-new"
    assert new_again.operation.operation_id == new.operation.operation_id
    assert repeat.operation.operation_id == earlier.operation_id
    assert repeat.operation.provider_reference == earlier.provider_reference

    # The invalid item's answer says what the unary call would have: which field, and why.
    assert not invalid.HasField("operation")
    assert "amount" in invalid.status.message
    info, violations = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert any(d.Unpack(info) for d in invalid.status.details)
    assert any(d.Unpack(violations) for d in invalid.status.details)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "paysuite.dev")
    assert info.metadata["request_id"]
    assert [v.field for v in violations.field_violations] == ["amount"]
    # ... and only its answer: no other item carries details.
    assert all(not r.status.details for r in (new, repeat, new_again))
    assert not conflict.HasField("operation")

    # The provider was asked for the valid items, never for the invalid one.
    keys = await rig.sims.keys("sim-primary")
    assert {f"{run}-new", f"{run}-earlier"} <= keys
    assert f"{run}-invalid" not in keys
