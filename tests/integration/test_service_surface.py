"""What operators and grpcurl see: health reflecting readiness, and server reflection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from common.grpc.auth import bearer_channel
from tests.conftest import Suite
from tests.integration.helpers import error_details
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

EXPECTED = {
    "wallet_target": "paysuite.wallet.v1.WalletService",
    "payment_target": "paysuite.payment.v1.PaymentService",
    "gateway_target": "paysuite.gateway.v1.GatewayService",
}


def _services(target: str) -> set[str]:
    with grpc.insecure_channel(target) as channel:
        return set(ProtoReflectionDescriptorDatabase(channel).get_services())


@pytest.mark.parametrize(("target", "service"), sorted(EXPECTED.items()))
async def test_reflection_lists_the_service(suite: Suite, target: str, service: str) -> None:
    services = await asyncio.to_thread(_services, getattr(suite, target))
    assert {service, "grpc.health.v1.Health"} <= services


@pytest.mark.parametrize(("target", "service"), sorted(EXPECTED.items()))
async def test_health_is_serving_once_dependencies_answer(
    suite: Suite, target: str, service: str
) -> None:
    async with bearer_channel(getattr(suite, target), make_token()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", service, "liveness"):
            for _ in range(50):
                response = await stub.Check(health_pb2.HealthCheckRequest(service=name))  # type: ignore[attr-defined]
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, name


METHODS = {
    "wallet_target": "/paysuite.wallet.v1.WalletService/Credit",
    "payment_target": "/paysuite.payment.v1.PaymentService/CreateDeposit",
    "gateway_target": "/paysuite.gateway.v1.GatewayService/Charge",
}


@pytest.mark.parametrize(("target", "method"), sorted(METHODS.items()))
async def test_request_bytes_that_do_not_decode_are_invalid_argument(
    suite: Suite, target: str, method: str
) -> None:
    async with bearer_channel(getattr(suite, target), make_token()) as channel:
        call = channel.unary_unary(method)  # raw bytes in, raw bytes out
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"\xff\xff\xff\xff\x0f\x01 not protobuf")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields, reason = error_details(caught.value)
    assert (fields, reason) == (["request"], "INVALID_ARGUMENT")
    details = caught.value.details() or ""
    assert "DecodeError" not in details
    assert "paysuite." not in details  # no message type names
