"""The provisioned Grafana: the datasource the dashboard names exists, and the dashboard shows
what issue 10 asks for (payments/s by status, latency p50/p99, breaker states, outbox lag,
stuck payments) from the metric names the processes export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "paysuite.json"

METRICS = (
    "payment_attempts_total",
    "payment_success_total",
    "payment_failures_total",
    "payment_latency_seconds_bucket",
    "payment_amount_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "gateway_circuit_breaker_state",
    "outbox_backlog",
    "outbox_oldest_unpublished_seconds",
    "stream_consumer_pending",
    "stream_dlq_length",
    "recovery_stuck_payments",
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def _expressions(dashboard: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for panel in _panels(dashboard) for t in panel["targets"])


def test_every_panel_queries_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uids = {source["uid"] for source in datasources["datasources"]}
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]


def test_the_dashboard_uses_every_exported_metric(dashboard: dict[str, Any]) -> None:
    expressions = _expressions(dashboard)
    assert [name for name in METRICS if name not in expressions] == []


def test_the_dashboard_shows_what_operators_asked_for(dashboard: dict[str, Any]) -> None:
    expressions = _expressions(dashboard)
    assert "histogram_quantile(0.50, sum by (le) (rate(payment_latency_seconds_bucket" in (
        expressions
    )
    assert "histogram_quantile(0.99, sum by (le) (rate(payment_latency_seconds_bucket" in (
        expressions
    )
    assert "sum by (reason) (rate(payment_failures_total" in expressions
    assert "sum by (status) (recovery_stuck_payments)" in expressions
    breaker = next(p for p in _panels(dashboard) if "gateway_circuit_breaker_state" in str(p))
    states = breaker["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {key: value["text"] for key, value in states.items()} == {
        "0": "closed",
        "1": "half-open",
        "2": "open",
    }


def test_panel_ids_are_unique_and_the_provider_loads_the_folder(
    dashboard: dict[str, Any],
) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/paysuite.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
