"""JSON log lines: the trace id, the flow's ids, and no secret whatever a caller passes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from common import tracing
from common.logging import bound_flow, configure_logging, correlation_id_var


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
