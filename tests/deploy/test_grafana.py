"""The provisioned Grafana: the datasource the dashboard names exists, and the dashboard shows
what issue 10 asks for (payments/s by status, latency p50/p99, breaker states, outbox lag,
stuck payments) from the metric names the processes export; and every panel's query names
only metrics some process of the suite declares (checked offline, without Grafana).
"""

from __future__ import annotations

import importlib
import json
import re
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
    "outbox_oldest_unpublished_age_seconds",
    "stream_pending",
    "stream_dead_letter_length",
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


# --- every query names a metric the suite exports ------------------------------------------

PACKAGES = (
    "common",
    "payment_service",
    "wallet_service",
    "gateway_service",
    "recovery_worker",
    "provider_simulator",
    "webhook_adapter",
)
ROOT = GRAFANA.parents[1]
# Series Prometheus makes itself for every target, not exported by any process.
PROMETHEUS_OWN = frozenset({"up"})
# The series names a family of each type exposes (prometheus-client drops `_total` from a
# counter family's name).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
_LABELS_AND_RANGES = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?")
_KEYWORDS = frozenset({"by", "without", "and", "or", "unless", "bool", "offset"})


def _metric_modules() -> list[str]:
    """Every module of ours that declares a metric family (found in the source, so a new
    module's metrics count without this list changing)."""
    declares = re.compile(r"^\s*\w+ = (?:Counter|Gauge|Histogram|Summary|Info)\(", re.M)
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "prometheus_client" in (text := path.read_text()) and declares.search(text)
    )


def _exported_series() -> set[str]:
    from prometheus_client import REGISTRY

    for module in _metric_modules():
        importlib.import_module(module)
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }


def _metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names or grouping labels."""
    bare = _GROUPING.sub("", _LABELS_AND_RANGES.sub("", expression))
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(bare)
        if match.group(2) is None and match.group(1) not in _KEYWORDS
    }


def test_the_metric_name_parser_finds_selectors_only() -> None:
    expression = (
        "histogram_quantile(0.99, sum by (le, grpc_service)"
        ' (rate(grpc_server_handling_seconds_bucket{job="payment"}[$__rate_interval])))'
        " / ignoring(job) up"
    )
    assert _metric_names(expression) == {"grpc_server_handling_seconds_bucket", "up"}


def test_every_panel_queries_a_metric_the_suite_exports(dashboard: dict[str, Any]) -> None:
    assert "payment_service.adapters.metrics" in _metric_modules()
    known = _exported_series() | PROMETHEUS_OWN
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            names = _metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, (panel["title"], sorted(names - known))
