"""The Prometheus alert rules: each parses, names only metrics the suite exports, and the
ones operators rely on (a stalled relay or consumer, a dead background task) exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

yaml = pytest.importorskip("yaml")

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
# Every module that defines metrics, imported so the registry knows them all.
METRIC_MODULES = (
    "common.outbox",
    "common.streams",
    "common.supervision",
    "common.grpc.metrics",
    "payment_service.bootstrap",
    "wallet_service.bootstrap",
    "gateway_service.bootstrap",
    "recovery_worker.bootstrap",
)
PROMQL_WORDS = {
    "and", "or", "unless", "on", "ignoring", "by", "without", "bool", "sum", "min", "max",
    "avg", "count", "rate", "increase", "irate", "delta", "deriv", "changes", "absent",
    "histogram_quantile", "time", "group_left", "group_right", "le", "offset",
}  # fmt: skip


def exported() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name, *(sample.name for sample in family.samples)}
        names |= {f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum")}
    return names


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|on|without|ignoring)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b", bare))
    return words - PROMQL_WORDS


def test_every_alert_names_only_exported_metrics() -> None:
    known = exported()
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} names {sorted(unknown)}"


def test_the_alerts_operators_rely_on_exist_and_say_what_to_run() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    for wanted in ("OutboxRelayStalled", "StreamConsumerStalled", "BackgroundTaskUnhealthy"):
        assert wanted in by_name
        assert by_name[wanted]["annotations"]["runbook"]


def test_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert "alerts.yml" in config["rule_files"]
