"""Tracing (OpenTelemetry): one trace per payment flow, across processes and event streams.

Every process runs the SDK's TracerProvider, so trace ids are always generated and propagated
(W3C `traceparent` in gRPC metadata, HTTP headers, and event envelopes), and every log line
carries the trace id of the work it belongs to. Spans are exported only when
PAYSUITE_OTLP_ENDPOINT is set; without it the sampler records nothing, so a span costs an id
and a small object, never attributes, events or an export queue.

Trace context crosses the outbox and the streams inside the envelope: `stamp` writes the
current context into an envelope when it is made, and a consumer handles the event in a span
that is a child of it (`context_of`). A batch that records the events of several flows at once
(the gateway's provider events) says which flow each aggregate belongs to with
`aggregate_traces`, so each envelope gets its own flow's context, not the batch's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from paysuite.events.v1 import events_pb2

Context = otel_context.Context

__all__ = [
    "Context",
    "Span",
    "SpanKind",
    "aggregate_traces",
    "configure_tracing",
    "context_of",
    "current_trace_id",
    "extract",
    "inject",
    "record_failure",
    "stamp",
    "tracer",
]

INSTRUMENTATION = "paysuite"
_PROPAGATOR = TraceContextTextMapPropagator()
# Until configured (unit tests, tools): ids are made, nothing is recorded.
_TRACER: trace.Tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer(INSTRUMENTATION)
# aggregate id -> the context of the flow that changed it, while a batch commits.
_AGGREGATE_TRACES: contextvars.ContextVar[Mapping[str, otel_context.Context] | None] = (
    contextvars.ContextVar("aggregate_traces", default=None)
)


def configure_tracing(
    *, service: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None
) -> TracerProvider:
    """Installs this process's tracer provider. With no endpoint (and no exporter, which tests
    pass) nothing is recorded: ALWAYS_OFF still makes ids and keeps a caller's trace id, so
    traces propagate and logs correlate at the cost of an id per span."""
    if exporter is None and otlp_endpoint:
        exporter = _otlp_exporter(otlp_endpoint)
    sampler: Sampler = ParentBased(ALWAYS_ON) if exporter else ALWAYS_OFF
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": service or "paysuite"})
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    global _TRACER
    _TRACER = provider.get_tracer(INSTRUMENTATION)
    return provider


def _otlp_exporter(endpoint: str) -> SpanExporter:
    # Imported only when configured: the exporter pulls in requests and the OTLP protos.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def tracer() -> trace.Tracer:
    """This process's tracer. Our own rather than the API's global one: the global provider
    can be set only once per process (tests configure several), and the SDK builds a new
    Tracer on every `get_tracer` call, which the hot paths must not pay for."""
    return _TRACER


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds the current trace context (`traceparent`, `tracestate`) to headers or metadata."""
    _PROPAGATOR.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier)


def stamp(envelope: events_pb2.EventEnvelope) -> None:
    """Writes the trace context of the flow that caused the event into its envelope."""
    traces = _AGGREGATE_TRACES.get()
    context = traces.get(envelope.aggregate_id) if traces else None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    envelope.traceparent = carrier.get("traceparent", "")
    envelope.tracestate = carrier.get("tracestate", "")


def context_of(envelope: events_pb2.EventEnvelope) -> otel_context.Context:
    """The context a consumer handles the event in: a child of the flow that caused it."""
    if not envelope.traceparent:
        return otel_context.Context()
    carrier = {"traceparent": envelope.traceparent}
    if envelope.tracestate:
        carrier["tracestate"] = envelope.tracestate
    return _PROPAGATOR.extract(carrier, context=otel_context.Context())


@contextlib.contextmanager
def aggregate_traces(traces: Mapping[str, otel_context.Context]) -> Iterator[None]:
    token = _AGGREGATE_TRACES.set(traces)
    try:
        yield
    finally:
        _AGGREGATE_TRACES.reset(token)


def record_failure(span: Span, exc: BaseException) -> None:
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def current_trace_id() -> str:
    """The current trace id as 32 hex digits, or "" outside any trace (for logs)."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""
