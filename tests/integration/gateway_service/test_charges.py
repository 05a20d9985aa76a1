"""Charges on a real gateway over a real gRPC socket (its own PostgreSQL, real simulators):
each charge of a batch is answered on its own, as a Charge of its own would have been."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2

from paysuite.common.v1 import money_pb2
from paysuite.gateway.v1 import gateway_pb2
from tests.integration.gateway_service.conftest import Rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

G = gateway_pb2


def charge(key: str, *, reference: str = "", amount: bool = True) -> G.ChargeRequest:
    request = G.ChargeRequest(
        idempotency_key=key, payment_method="pm_card_visa", reference=reference or key
    )
    if amount:
        request.amount.CopyFrom(money_pb2.Money(amount_minor=1250, currency="EUR"))
    return request


async def test_each_charge_of_a_batch_gets_its_own_answer(rig: Rig) -> None:
    await rig.sims.reset()
    run = uuid.uuid4().hex[:8]
    earlier = await rig.charge(f"{run}-earlier")  # a unary Charge, asked again in the batch

    response = await rig.gateway.Charges(
        G.ChargesRequest(
            charges=[
                charge(f"{run}-new"),
                charge(f"{run}-invalid", amount=False),
                charge(f"{run}-earlier"),
                charge(f"{run}-earlier", reference="another payment"),
                charge(f"{run}-new"),
            ]
        ),
        timeout=10.0,
    )

    new, invalid, repeat, conflict, new_again = response.results
    assert [r.status.code for r in response.results] == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.ALREADY_EXISTS.value[0],
        grpc.StatusCode.OK.value[0],
    ]
    assert new.operation.status == G.OPERATION_STATUS_PENDING
    assert new.operation.idempotency_key == f"{run}-new"
    assert new_again.operation.operation_id == new.operation.operation_id
    assert repeat.operation.operation_id == earlier.operation_id
    assert repeat.operation.provider_reference == earlier.provider_reference

    # The invalid charge's answer says what Charge would have: which field, and why.
    assert not invalid.HasField("operation")
    assert "amount" in invalid.status.message
    info, violations = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert any(d.Unpack(info) for d in invalid.status.details)
    assert any(d.Unpack(violations) for d in invalid.status.details)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "paysuite.dev")
    assert info.metadata["request_id"]
    assert [v.field for v in violations.field_violations] == ["amount"]
    # ... and only its answer: no other charge carries details.
    assert all(not r.status.details for r in (new, repeat, new_again))
    assert not conflict.HasField("operation")

    # The provider was asked for the valid charges, never for the invalid one.
    keys = await rig.sims.keys("sim-primary")
    assert {f"{run}-new", f"{run}-earlier"} <= keys
    assert f"{run}-invalid" not in keys
