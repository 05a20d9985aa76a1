"""Structured logging (structlog) for every process: JSON in containers, readable on a terminal.

Request ids travel in contextvars (set by the gRPC interceptor), so every line logged while
serving a request carries them without being passed around; the trace id comes from the
current span, and the flow's correlation and payment ids are bound by `bound_flow` where the
gRPC interceptor or the stream consumer learns them.

Secrets never reach a line: keys that name one are redacted whatever their value, and the
password of any URL in a value (a DSN in an exception message, a webhook URL) is masked, after
tracebacks are formatted, so those are covered too.

Values are safe to read: control characters (NUL, CR, LF, ESC, ...), bidi overrides and other
invisible format characters are escaped as Python writes them (`\\x00`, `\\r`, `\\u202e`),
in one processor every renderer sees (console, JSON, and the stdlib lines of libraries), and a
very long value is cut with a marker. A caller-chosen id can then neither forge a line, reorder
what a terminal shows, nor turn the file binary for grep.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

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


# Longer values are cut (a whole body or response in a value is a bug, not a record); a
# traceback gets more room.
MAX_VALUE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 20_000


def escape(text: str, *, keep_newlines: bool = False, limit: int = MAX_VALUE_CHARS) -> str:
    """`text` with every non-printable character escaped and cut after `limit` characters.
    Non-printable as `str.isprintable` says: the controls (Cc), format characters such as
    the bidi overrides and isolates (Cf), separators other than the space, and surrogates."""
    if len(text) > limit:
        text = f"{text[:limit]}...[{len(text) - limit} more chars]"
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or (keep_newlines and char == "\n") else _escaped(char)
        for char in text
    )


def _escaped(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def _escape_values(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    return {
        escape(key) if isinstance(key, str) else key: _safe(key, value)
        for key, value in event_dict.items()
    }


def _safe(key: object, value: object) -> object:
    if isinstance(value, str):
        if key == "exception":  # the traceback's own line breaks stay
            return escape(value, keep_newlines=True, limit=MAX_TRACEBACK_CHARS)
        return escape(value)
    if isinstance(value, list | tuple):
        return [_safe(None, item) for item in value]
    if isinstance(value, dict):
        return {_safe(None, k): _safe(None, v) for k, v in value.items()}
    return value


class _SafeFormatter(logging.Formatter):
    """The lines libraries log through the standard library, escaped the same way."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return escape(super().formatException(ei), keep_newlines=True, limit=MAX_TRACEBACK_CHARS)


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


FlowTokens = tuple[contextvars.Token[str], contextvars.Token[str]]


def bind_flow(correlation_id: str, payment_id: str = "") -> FlowTokens:
    """`bound_flow`'s entry, for a scope that is a class of its own (the gRPC server's span,
    entered for every call, where a generator's context manager costs more): an id not given
    keeps the one already bound. Undone by `unbind_flow` with what it returns."""
    return (
        correlation_id_var.set(correlation_id or correlation_id_var.get()),
        payment_id_var.set(payment_id or payment_id_var.get()),
    )


def unbind_flow(tokens: FlowTokens) -> None:
    correlation, payment = tokens
    payment_id_var.reset(payment)
    correlation_id_var.reset(correlation)


@contextlib.contextmanager
def bound_flow(correlation_id: str, payment_id: str = "") -> Iterator[None]:
    """Logs inside carry the flow's correlation id and, when known, its payment id."""
    tokens = bind_flow(correlation_id, payment_id)
    try:
        yield
    finally:
        unbind_flow(tokens)


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
            _escape_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_current_stderr,
        cache_logger_on_first_use=True,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
