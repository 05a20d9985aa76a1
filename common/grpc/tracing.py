"""Spans of every gRPC call, served and made, and the log fields of the request being served.

Our own two interceptors rather than opentelemetry-instrumentation-grpc: that package is still
a beta (0.x) that wraps every handler per call and brings the instrumentation machinery
(wrapt, entry points) along, while the server here needs to bind the request's log fields in
the same scope anyway. These are short, sit beside the metrics and error interceptors, and
follow the OpenTelemetry RPC conventions (span `package.Service/Method`, `rpc.*` attributes).

The caller's `traceparent` comes in the metadata; `x-correlation-id` travels beside it, so the
logs of every hop of one flow carry the same correlation id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import structlog
from grpc_interceptor.server import AsyncServerInterceptor
from opentelemetry import trace

from common import tracing
from common.grpc.metrics import ClientMetricsInterceptor, split_method
from common.logging import bound_flow, correlation_id_var

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "x-correlation-id"
MAX_ID_LENGTH = 128


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str) and key in ("traceparent", "tracestate", CORRELATION_HEADER)
    }


def _payment_id(request: Any) -> str:
    """The payment a request names, when it names one (GetPayment, RefundPayment, ...)."""
    value = getattr(request, "payment_id", "")
    return value if isinstance(value, str) and len(value) <= MAX_ID_LENGTH else ""


class ServerTracingInterceptor(AsyncServerInterceptor):
    """A SERVER span per call, a child of the caller's; the request's payment id and the
    caller's correlation id bound to the logs for as long as the call runs."""

    async def intercept(
        self,
        method: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        metadata = _metadata(context)
        parent = tracing.extract(metadata)
        payment_id = _payment_id(request_or_iterator)
        correlation_id = metadata.get(CORRELATION_HEADER, "")[:MAX_ID_LENGTH] or payment_id
        with _server_span(method_name, parent) as span, bound_flow(correlation_id, payment_id):
            try:
                response = method(request_or_iterator, context)
                if hasattr(response, "__aiter__"):
                    return _traced_stream(response, method_name, parent, metadata)
                result = await response
            except BaseException as exc:
                _finish(span, context, exc)
                raise
            _finish(span, context, None)
            return result


@contextlib.contextmanager
def _server_span(method_name: str, parent: Any) -> Iterator[trace.Span]:
    service, name = split_method(method_name)
    with tracing.tracer().start_as_current_span(
        f"{service}/{name}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


async def _traced_stream(
    stream: AsyncIterator[Any], method_name: str, parent: Any, metadata: dict[str, str]
) -> AsyncIterator[Any]:
    # A server stream outlives the intercept call: its span is the stream's whole life.
    correlation_id = metadata.get(CORRELATION_HEADER, "")[:MAX_ID_LENGTH]
    with _server_span(method_name, parent), bound_flow(correlation_id, ""):
        async for item in stream:
            yield item


def _finish(
    span: trace.Span, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> None:
    code = context.code()
    # An access log line, at DEBUG: inside the span, so it carries the trace id.
    log.debug("rpc.served", code=code.name if isinstance(code, grpc.StatusCode) else code)
    if not span.is_recording():
        return
    if code is not None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
    if exc is not None and not isinstance(exc, grpc.aio.AbortError):
        tracing.record_failure(span, exc)
    elif code not in (None, grpc.StatusCode.OK):
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))


class ClientTracingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A CLIENT span per call, whose context (and the flow's correlation id) goes to the
    server in the metadata."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        service, name = split_method(client_call_details.method)
        with tracing.tracer().start_as_current_span(
            f"{service}/{name}",
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        ) as span:
            call = await continuation(_with_context(client_call_details), request)
            code = await call.code()
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            return call


def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    carrier = tracing.inject({})
    correlation_id = correlation_id_var.get()
    if correlation_id:
        carrier[CORRELATION_HEADER] = correlation_id
    for key, value in carrier.items():
        metadata[key] = value
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """What every channel between our services carries, outermost first: metrics time the
    whole call including the span's work, tracing adds the context."""
    return [ClientMetricsInterceptor(), ClientTracingInterceptor()]
