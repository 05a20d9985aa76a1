"""RED metrics of every gRPC call, served and made: a server and a client interceptor.

Names follow go-grpc-prometheus (`grpc_server_handled_total`, `grpc_server_handling_seconds`,
and the `grpc_client_*` pair), which ready-made Grafana dashboards already query. Labels are
the service and method from the method path and the status code name: bounded by our protos.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import Counter as CounterType
from prometheus_client.metrics import Histogram as HistogramType

from common.metrics import CALL_BUCKETS, cached

SERVER_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed by this server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time this server took to complete an RPC (a stream: its whole life).",
    ["grpc_service", "grpc_method"],
    buckets=CALL_BUCKETS,
)
CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "Unary RPCs this process made that completed, by status code (after gRPC's own retries).",
    ["grpc_service", "grpc_method", "grpc_code"],
)
CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time a unary RPC this process made took to complete, retries included.",
    ["grpc_service", "grpc_method"],
    buckets=CALL_BUCKETS,
)

_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def split_method(method: str | bytes) -> tuple[str, str]:
    """`/paysuite.payment.v1.PaymentService/CreateDeposit` -> (service, method)."""
    path = method.decode() if isinstance(method, bytes) else method
    service, _, name = path.lstrip("/").rpartition("/")
    return service or "unknown", name or "unknown"


def code_name(code: grpc.StatusCode | int | None, default: str) -> str:
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _NAMES.get(code, default)


class _Recorder:
    """The label children of one direction (server or client), bound once per method."""

    def __init__(self, handled: CounterType, seconds: HistogramType) -> None:
        def timer(method: str | bytes) -> HistogramType:
            return seconds.labels(*split_method(method))

        def count(key: tuple[str | bytes, str]) -> CounterType:
            method, code = key
            return handled.labels(*split_method(method), code)

        self._timer = cached(timer)
        self._count = cached(count)

    def record(self, method: str | bytes, code: str, started: float) -> None:
        self._timer(method).observe(time.perf_counter() - started)
        self._count((method, code)).inc()


_server = _Recorder(SERVER_HANDLED, SERVER_SECONDS)
_client = _Recorder(CLIENT_HANDLED, CLIENT_SECONDS)


def record_served(method_name: str, code: str, started: float) -> None:
    """One served call: its status and how long it took. Recorded by the error mapping (which
    chooses the status) and the decode guard (which answers before it), not by an interceptor
    layer of its own: each layer costs ~20 us of CPU per call."""
    _server.record(method_name, code, started)


def failed_code(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The status of a call that ended in `exc`: the abort's code, else what grpc answers for
    an exception that is not an abort (the caller went away: cancelled; a bug: UNKNOWN)."""
    default = "CANCELLED" if isinstance(exc, GeneratorExit | asyncio.CancelledError) else "UNKNOWN"
    return code_name(context.code(), default)


class ClientMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """On every channel between our services. Waits for the call's status before handing the
    call back: the caller awaits it next anyway, and a status is only known at the end."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        record_client_call(client_call_details.method, await call.code(), started)
        return call


def record_client_call(method: str | bytes, code: grpc.StatusCode, started: float) -> None:
    _client.record(method, code_name(code, "UNKNOWN"), started)
