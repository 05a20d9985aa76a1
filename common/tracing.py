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
import random
import re
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
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


class Tracer:
    """Starts spans: the SDK's when they are exported, else unsampled ones of our own.

    Unsampled is what the SDK makes with ALWAYS_OFF too (a fresh span id, the parent's trace
    id or a fresh one, flags not sampled), but at 1.5 us a span instead of 5.3: the SDK runs
    its sampler and builds attributes for a span that records nothing. A deposit makes about
    thirty spans, so this is the part of the cost that is worth the dozen lines."""

    def __init__(self, sdk: trace.Tracer | None) -> None:
        self._sdk = sdk

    def start_span(
        self,
        name: str,
        *,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span:
        if self._sdk is not None:
            return self._sdk.start_span(name, context=context, kind=kind, attributes=attributes)
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            return NonRecordingSpan(
                SpanContext(
                    parent.trace_id,
                    _new_id(64),
                    is_remote=False,
                    trace_flags=TraceFlags(TraceFlags.DEFAULT),
                    trace_state=parent.trace_state,
                )
            )
        return NonRecordingSpan(
            SpanContext(_new_id(128), _new_id(64), is_remote=False, trace_flags=TraceFlags(0))
        )

    def start_as_current_span(
        self,
        name: str,
        *,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        record_exception: bool = True,
    ) -> CurrentSpan:
        span = self.start_span(name, context=context, kind=kind, attributes=attributes)
        return CurrentSpan(span, record_exception=record_exception)


class CurrentSpan:
    """The span made current for a block and ended after it (as the API's `use_span`, in a
    plain class: its two nested generators cost more than the span itself)."""

    def __init__(self, span: Span, *, record_exception: bool) -> None:
        self._span = span
        self._record_exception = record_exception
        self._token: contextvars.Token[otel_context.Context] | None = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        if exc is not None and self._record_exception:
            record_failure(self._span, exc)
        self._span.end()


def _new_id(bits: int) -> int:
    # As the SDK's RandomIdGenerator: ids, not secrets; zero is the invalid id.
    return random.getrandbits(bits) or 1


_PROPAGATOR = TraceContextTextMapPropagator()
# Until configured (unit tests, tools): ids are made, nothing is recorded.
_TRACER = Tracer(None)
# aggregate id -> the context of the flow that changed it, while a batch commits.
_AGGREGATE_TRACES: contextvars.ContextVar[Mapping[str, otel_context.Context] | None] = (
    contextvars.ContextVar("aggregate_traces", default=None)
)


def configure_tracing(
    *, service: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None
) -> TracerProvider:
    """Installs this process's tracer. With no endpoint (and no exporter, which tests pass)
    nothing is recorded: spans are unsampled ones that still make ids and keep a caller's
    trace id, so traces propagate and logs correlate at the cost of an id per span."""
    if exporter is None and otlp_endpoint:
        exporter = _otlp_exporter(otlp_endpoint)
    sampler: Sampler = ParentBased(ALWAYS_ON) if exporter else ALWAYS_OFF
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": service or "paysuite"})
    )
    global _TRACER  # one tracer per process, replaced only by configuration
    if exporter is None:
        _TRACER = Tracer(None)
        return provider
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _TRACER = Tracer(provider.get_tracer(INSTRUMENTATION))
    return provider


def _otlp_exporter(endpoint: str) -> SpanExporter:
    # Imported only when configured: the exporter pulls in requests and the OTLP protos.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def tracer() -> Tracer:
    """This process's tracer. Our own rather than the API's global one: the global provider
    can be set only once per process (tests configure several), and the SDK builds a new
    Tracer on every `get_tracer` call, which the hot paths must not pay for."""
    return _TRACER


def inject(
    carrier: MutableMapping[str, str], *, context: otel_context.Context | None = None
) -> MutableMapping[str, str]:
    """Adds the trace context (`traceparent`, `tracestate`) to headers or metadata: the
    current one, or `context`."""
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


# A traceparent as our own processes send it (version 00, no tracestate), which
# `extract` parses itself, to the same context as the propagator at a quarter of its cost:
# every call between our services and every item of a batch call carries one.
_PLAIN_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    """The trace context in headers or metadata (an empty context when there is none)."""
    traceparent = carrier.get("traceparent")
    if traceparent and not carrier.get("tracestate"):
        match = _PLAIN_TRACEPARENT.fullmatch(traceparent)
        if match is not None:
            trace_id, span_id = int(match[1], 16), int(match[2], 16)
            if trace_id and span_id:
                parent = SpanContext(
                    trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16))
                )
                return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())
    # Anything else (a tracestate, another version, spaces, zero ids) as the W3C propagator
    # reads it.
    return _PROPAGATOR.extract(carrier)


# Envelopes are written and read only by us, so their W3C trace context is formatted and
# parsed here directly (a quarter of the propagator's cost, paid once per event on each side);
# headers and metadata from elsewhere go through the propagator.


def stamp(envelope: events_pb2.EventEnvelope) -> None:
    """Writes the trace context of the flow that caused the event into its envelope."""
    traces = _AGGREGATE_TRACES.get()
    context = traces.get(envelope.aggregate_id) if traces else None
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return
    envelope.traceparent = (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{span_context.trace_flags:02x}"
    )
    if span_context.trace_state:
        envelope.tracestate = span_context.trace_state.to_header()


def context_of(envelope: events_pb2.EventEnvelope) -> otel_context.Context:
    """The context a consumer handles the event in: a child of the flow that caused it (an
    empty one, so a new trace, when the envelope has none or a malformed one)."""
    version, _, rest = envelope.traceparent.partition("-")
    trace_hex, _, rest = rest.partition("-")
    span_hex, _, flags_hex = rest.partition("-")
    if version != "00" or len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return otel_context.Context()
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return otel_context.Context()
    state = TraceState.from_header([envelope.tracestate]) if envelope.tracestate else None
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state
    )
    if not parent.is_valid:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


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
