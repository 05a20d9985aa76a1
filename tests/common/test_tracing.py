"""Trace context: made and propagated with the exporter off, carried by envelopes and gRPC
metadata, and exported when an exporter is configured."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from common import tracing
from common.events import make_envelope
from common.grpc.client import create_channel
from common.grpc.server import create_server
from paysuite.events.v1 import events_pb2
from tests.tokens import make_authenticator


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = tracing.configure_tracing(service="test", exporter=spans)
    yield provider, spans
    provider.shutdown()
    tracing.configure_tracing(service="test")


@pytest.fixture(autouse=True)
def exporter_off() -> None:
    tracing.configure_tracing(service="test")
    return


def envelope() -> events_pb2.EventEnvelope:
    return make_envelope(
        event_type="payment.initiated",
        aggregate_type="payment",
        aggregate_id="p-1",
        aggregate_version=1,
        payload=events_pb2.PaymentStepRecorded(payment_id="p-1"),
        producer="test",
    )


def test_with_the_exporter_off_ids_are_made_and_kept_but_nothing_is_recorded() -> None:
    with tracing.tracer().start_as_current_span("root") as root:
        assert not root.is_recording()
        root_context = root.get_span_context()
        assert root_context.is_valid
        with tracing.tracer().start_as_current_span("child") as child:
            assert child.get_span_context().trace_id == root_context.trace_id
        assert tracing.current_trace_id() == format(root_context.trace_id, "032x")
    assert tracing.current_trace_id() == ""


def test_an_envelope_carries_the_trace_of_the_flow_that_made_it() -> None:
    with tracing.tracer().start_as_current_span("request") as span:
        stamped = envelope()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert stamped.traceparent.split("-")[1] == trace_id
    with tracing.tracer().start_as_current_span("handle", context=tracing.context_of(stamped)):
        assert tracing.current_trace_id() == trace_id


def test_outside_any_trace_an_envelope_has_none_and_its_handling_starts_one() -> None:
    stamped = envelope()
    assert stamped.traceparent == ""
    with tracing.tracer().start_as_current_span("handle", context=tracing.context_of(stamped)):
        assert tracing.current_trace_id() != ""


def test_in_a_batch_each_aggregate_gets_the_trace_of_its_own_flow() -> None:
    with tracing.tracer().start_as_current_span("webhook") as webhook:
        flow = tracing.extract(dict(tracing.inject({})))
    with (
        tracing.tracer().start_as_current_span("batch"),
        tracing.aggregate_traces({"p-1": flow}),
    ):
        stamped = envelope()
    assert stamped.traceparent.split("-")[1] == format(webhook.get_span_context().trace_id, "032x")


@pytest.mark.asyncio(loop_scope="session")
async def test_grpc_calls_are_client_and_server_spans_of_one_trace(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    server, port, health = create_server(
        "127.0.0.1:0", registrars=[], service_names=[], auth=make_authenticator()
    )
    await server.start()
    await health.set("known", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            with tracing.tracer().start_as_current_span("caller"):
                await stub.Check(health_pb2.HealthCheckRequest(service="known"))  # type: ignore[attr-defined]
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Check(health_pb2.HealthCheckRequest(service="nope"))  # type: ignore[attr-defined]
    finally:
        await server.stop(0)
    provider.force_flush()
    spans = exporter.get_finished_spans()
    by_kind = {
        kind: [s for s in spans if s.kind is kind] for kind in (SpanKind.CLIENT, SpanKind.SERVER)
    }
    assert [s.name for s in by_kind[SpanKind.SERVER]] == ["grpc.health.v1.Health/Check"] * 2
    assert len(by_kind[SpanKind.CLIENT]) == 2
    assert len({s.context.trace_id for s in spans}) == 1
    for client, served in zip(by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER], strict=True):
        assert served.parent is not None
        assert served.parent.span_id == client.context.span_id
    failed = by_kind[SpanKind.SERVER][1]
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_an_envelope_keeps_the_trace_state_and_a_malformed_context_starts_a_new_trace() -> None:
    parent = tracing.extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=value",
        }
    )
    with tracing.tracer().start_as_current_span("request", context=parent):
        stamped = envelope()
    assert stamped.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert stamped.tracestate == "vendor=value"
    span_context = trace.get_current_span(tracing.context_of(stamped)).get_span_context()
    assert span_context.trace_state.get("vendor") == "value"
    for bad in ("", "01-x", "00-0af7651916cd43dd8448eb211c80319c-zzzz6b7169203331-01"):
        stamped.traceparent = bad
        assert not trace.get_current_span(tracing.context_of(stamped)).get_span_context().is_valid


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "tracestate": "",
        },
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "v=1",
        },
        {"traceparent": " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 "},
        {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"},
        {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
        {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": ""},
        {},
    ],
)
def test_extract_reads_a_context_as_the_w3c_propagator_does(carrier: dict[str, str]) -> None:
    expected = TraceContextTextMapPropagator().extract(carrier)
    got = tracing.extract(carrier)
    assert (
        trace.get_current_span(got).get_span_context()
        == trace.get_current_span(expected).get_span_context()
    )
    assert dict(got).keys() == dict(expected).keys()
