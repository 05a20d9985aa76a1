"""Structured logging (structlog) for every process: JSON in containers, readable on a terminal.

Request ids travel in contextvars (set by the gRPC interceptor), so every line logged while
serving a request carries them without being passed around; the trace id comes from the
current span, and the flow's correlation and payment ids are bound by `bound_flow` where the
gRPC interceptor or the stream consumer learns them.

Secrets never reach a line: keys that name one are redacted whatever their value, and the
password of any URL in a value (a DSN in an exception message, a webhook URL) is masked, after
tracebacks are formatted, so those are covered too.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator

import structlog
from opentelemetry import trace

# Keys never logged, whatever a caller passes: secrets, credentials, whole bodies and headers
# (a webhook's body names the customer's instrument, its headers carry the signature), and
# payment instrument data.
_REDACTED_KEYS = frozenset(
    {
        "secret",
        "webhook_secret",
        "password",
        "token",
        "authorization",
        "database_url",
        "redis_url",
        "dsn",
        "body",
        "raw_payload",
        "headers",
        "payment_method",
        "card",
    }
)
# scheme://user:PASSWORD@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def _redact(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key in _REDACTED_KEYS & event_dict.keys():
        event_dict[key] = "[redacted]"
    return event_dict


def _mask_url_passwords(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str) and "@" in value:
            event_dict[key] = _URL_PASSWORD.sub(r"\1***@", value)
    return event_dict


def _add_trace_id(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """The trace id of the span the line is logged in (a span is always current while
    serving a call, handling an event or recording a transaction)."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
    return event_dict


# The business flow being served (for a payment: its id), sent on with every gRPC call, and
# the payment it concerns when known. Our own variables, not structlog's bound ones: they are
# set for every call served and every event handled, and a plain ContextVar costs a tenth.
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "correlation_id", default=""
)
payment_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("payment_id", default="")


@contextlib.contextmanager
def bound_flow(correlation_id: str, payment_id: str = "") -> Iterator[None]:
    """Logs inside carry the flow's correlation id and, when known, its payment id."""
    correlation = correlation_id_var.set(correlation_id or correlation_id_var.get())
    payment = payment_id_var.set(payment_id or payment_id_var.get())
    try:
        yield
    finally:
        payment_id_var.reset(payment)
        correlation_id_var.reset(correlation)


def _add_flow_ids(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    correlation_id = correlation_id_var.get()
    if correlation_id:
        event_dict.setdefault("correlation_id", correlation_id)
    payment_id = payment_id_var.get()
    if payment_id:
        event_dict.setdefault("payment_id", payment_id)
    return event_dict


class _CurrentStderr:
    """Writes each line to whatever `sys.stderr` is when it is logged, not when logging was
    configured: loggers are cached on first use, and a stream swapped out meanwhile (a CLI
    runner's captured stderr, closed after the command) must not break them for good."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _current_stderr(*_args: object) -> _CurrentStderr:
    return _CurrentStderr()


def configure_logging(*, level: str = "INFO", fmt: str = "console", service: str = "") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_id,
            _add_flow_ids,
            _redact,
            structlog.processors.format_exc_info,
            _mask_url_passwords,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_current_stderr,
        cache_logger_on_first_use=True,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
