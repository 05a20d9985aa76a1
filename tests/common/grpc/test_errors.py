"""The error table's answer to overload: RESOURCE_EXHAUSTED with a RetryInfo the client reads."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from common.errors import Overloaded, RateLimited
from common.grpc.errors import rich_status
from common.grpc.retry_info import overload_delay_s, retry_delay_s


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (Overloaded("busy", retry_after_s=0.75), "OVERLOADED"),
        (RateLimited("slow down", retry_after_s=0.0004), "RATE_LIMITED"),
    ],
)
def test_overload_is_resource_exhausted_with_retry_info(error: Overloaded, reason: str) -> None:
    code, message, details = rich_status(error, "req-1")
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == error.message
    status = status_pb2.Status.FromString(details)
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == reason
    assert status.details[1].Unpack(retry)
    # Rounded up to the millisecond: a delay is never sent as zero.
    assert retry.retry_delay.ToMilliseconds() == max(1, round(error.retry_after_s * 1000))


def test_a_client_reads_the_delay_back() -> None:
    code, message, details = rich_status(Overloaded("busy", retry_after_s=1.5), "req-2")
    exc = grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", details)),
        details=message,
    )
    assert overload_delay_s(exc) == 1.5
    assert retry_delay_s(exc) == 1.5
    plain = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    assert overload_delay_s(plain) is None
    assert retry_delay_s(plain) is None
    too_big = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    assert overload_delay_s(too_big) is None  # no RetryInfo: not admission control
