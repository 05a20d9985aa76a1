"""What a refusal says about trying again: the google.rpc.RetryInfo of its rich status.

The payment service sends one with RESOURCE_EXHAUSTED (admission control, common/admission.py)
and with ABORTED for a request still in flight; a client waits that long and repeats the
request with the same idempotency key.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS = "grpc-status-details-bin"


def retry_delay_s(exc: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay in seconds, None when the status carries none."""
    for key, value in exc.trailing_metadata() or ():
        if key != STATUS_DETAILS or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return int(info.retry_delay.ToMilliseconds()) / 1000
    return None


def overload_delay_s(exc: BaseException) -> float | None:
    """A refusal by admission control (RESOURCE_EXHAUSTED with a RetryInfo: nothing was done)
    says to repeat after this many seconds; None for anything else, such as a gRPC message
    over its size limit, which is RESOURCE_EXHAUSTED too but no reason to wait and repeat."""
    if not isinstance(exc, grpc.aio.AioRpcError):
        return None
    if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    return retry_delay_s(exc)
