"""Spans of the HTTP requests our aiohttp processes serve and make (W3C `traceparent`).

The webhook adapter and the provider simulator serve HTTP; the gateway calls its providers
and the simulator delivers webhooks over HTTP. A server span continues the caller's trace; a
client span's context goes out in the request's headers (`client_span`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping

import structlog
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace

from common import tracing

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key in TRACE_HEADERS if (value := headers.get(key))}


def _route(request: web.Request) -> str:
    # The route's template (`/webhooks/{provider}`), never the path: a bounded span name, and
    # no ids or tokens from the URL in it.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: a SERVER span per request, a child of the caller's when it sent one."""
    route = _route(request)
    with tracing.tracer().start_as_current_span(
        f"{request.method} {route}",
        context=tracing.extract(trace_headers(request.headers)),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route},
    ) as span:
        response = await handler(request)
        if span.is_recording():
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
        log.debug("http.served", method=request.method, route=route, status=response.status)
        return response


@contextlib.contextmanager
def client_span(
    method: str, name: str, *, parent: otel_context.Context | None = None
) -> Iterator[tuple[trace.Span, dict[str, str]]]:
    """A CLIENT span for one outgoing request, and the headers that carry it. `parent` is
    the context to continue when it is not the current one (a stored operation's)."""
    with tracing.tracer().start_as_current_span(
        f"{method} {name}",
        context=parent,
        kind=trace.SpanKind.CLIENT,
        attributes={"http.request.method": method},
    ) as span:
        yield span, dict(tracing.inject({}))


def record_status(span: trace.Span, status: int) -> None:
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
