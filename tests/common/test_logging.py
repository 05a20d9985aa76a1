"""JSON log lines: the trace id, the flow's ids, and no secret whatever a caller passes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from common import tracing
from common.logging import (
    MAX_VALUE_CHARS,
    _SafeFormatter,
    bound_flow,
    configure_logging,
    correlation_id_var,
    escape,
)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging(level="INFO", fmt="json", service="test")
    yield capsys
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_a_line_has_timestamp_level_service_trace_and_flow_ids(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    log = structlog.get_logger("t")
    with tracing.tracer().start_as_current_span("work"), bound_flow("p-1", "p-1"):
        assert correlation_id_var.get() == "p-1"
        log.info("inside")
        trace_id = tracing.current_trace_id()
    log.info("outside")
    inside, outside = lines(json_logs)
    assert inside["trace_id"] == trace_id
    assert inside["correlation_id"] == inside["payment_id"] == "p-1"
    assert {"timestamp", "level", "service", "event"} <= inside.keys()
    assert "trace_id" not in outside
    assert "payment_id" not in outside
    assert correlation_id_var.get() == ""


def test_secrets_bodies_and_url_passwords_are_never_written(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    log = structlog.get_logger("t")
    log.info(
        "leaky",
        webhook_secret="whsec_abc",
        body='{"payment_method": "pm_x"}',
        headers={"webhook-signature": "v1,xyz"},
        error="connection to postgresql://paysuite:hunter2@db:5432/payments failed",
    )
    try:
        raise RuntimeError("redis://:s3cr3t@cache:6379/0 refused")
    except RuntimeError:
        log.exception("failed")
    text = json.dumps(lines(json_logs))
    for secret in ("whsec_abc", "pm_x", "v1,xyz", "hunter2", "s3cr3t"):
        assert secret not in text
    assert "postgresql://paysuite:***@db:5432/payments" in text


ID = "\u202eevil\x00"  # no space: the console renderer writes it unquoted
HOSTILE = "\u202eevil\x00\r\nlevel=info event=forged\u2066\u200f\x1b[31m"


def test_controls_bidi_and_line_breaks_in_values_are_escaped() -> None:
    escaped = escape(HOSTILE)
    assert escaped == ("\\u202eevil\\x00\\r\\nlevel=info event=forged\\u2066\\u200f\\x1b[31m")
    assert escaped.isprintable()
    assert escape("pay_123 ok") == "pay_123 ok"  # the common case is left alone


def test_a_very_long_value_is_cut_with_a_marker() -> None:
    cut = escape("x" * (MAX_VALUE_CHARS + 500))
    assert cut == "x" * MAX_VALUE_CHARS + "...[500 more chars]"


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_every_renderer_writes_hostile_values_escaped(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    configure_logging(level="INFO", fmt=fmt, service="test")
    try:
        log = structlog.get_logger("t")
        with bound_flow(HOSTILE, ID):
            log.info("lookup", requested=HOSTILE, ids=[HOSTILE])
            try:
                raise KeyError(HOSTILE)
            except KeyError:
                log.exception("failed")
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
    err = capsys.readouterr().err
    for raw in ("\u202e", "\x00", "\r", "\u2066", "\u200f", "\x1b"):
        assert raw not in err, f"{raw!r} reached the {fmt} log"
    assert "event=forged" not in "".join(
        line for line in err.splitlines() if line.startswith("level=info")
    )
    if fmt == "json":
        first = json.loads(err.splitlines()[0])
        for key in ("correlation_id", "requested"):
            assert first[key] == escape(HOSTILE)
        assert first["ids"] == [escape(HOSTILE)]
        assert first["payment_id"] == "\\u202eevil\\x00"
    else:
        assert "payment_id=\\u202eevil\\x00" in err


def test_library_lines_through_the_standard_library_are_escaped_too() -> None:
    record = logging.LogRecord("lib", logging.WARNING, "f.py", 1, "bad line %s", (HOSTILE,), None)
    line = _SafeFormatter("%(levelname)s %(name)s %(message)s").format(record)
    assert line == f"WARNING lib bad line {escape(HOSTILE)}"
