"""The counters the cost accounting reads from each process's /metrics and from Redis.

Flattened to `{"group:detail": value}` so two readings subtract key by key:
- `grpc:<service>/<method>` calls a server completed (`grpc_server_handled_total`, any code);
- `http:provider` requests the gateway sent to a provider, every attempt
  (`gateway_provider_calls_total`, less those the circuit breaker refused, never sent), and
  `http:webhooks` webhooks the adapter received (`webhook_receipts_total`, any result);
- `published:<process>` outbox rows the process published (`outbox_published_total`);
- `consumed:<stream> <group>` stream entries a consumer handled, whatever the result, and
  `skipped:<stream> <group>` those it acknowledged unread, of a type it does not act on
  (`stream_events_handled_total`).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families


def read_metrics(url: str) -> str:
    with urlopen(url, timeout=10) as response:  # noqa: S310 - the suite's local /metrics
        text: bytes = response.read()
    return text.decode()


def from_metrics(process: str, text: str) -> dict[str, float]:
    found: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        found[key] = found.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # _created and the like
            labels = sample.labels
            match family.name:
                case "grpc_server_handled":
                    add(f"grpc:{labels['grpc_service']}/{labels['grpc_method']}", sample.value)
                case "gateway_provider_calls" if labels.get("outcome") != "circuit_open":
                    add("http:provider", sample.value)
                case "webhook_receipts":
                    add("http:webhooks", sample.value)
                case "outbox_published":
                    add(f"published:{process}", sample.value)
                case "outbox_claims":
                    add(f"relay_claims:{process}", sample.value)
                case "stream_events_handled":
                    kind = "skipped" if labels.get("result") == "skipped" else "consumed"
                    add(f"{kind}:{labels['stream']} {labels['group']}", sample.value)
    return found


def from_commandstats(info: Mapping[str, object]) -> dict[str, int]:
    """`INFO commandstats` as redis-py parses it ({"cmdstat_xadd": {"calls": 3, ...}}):
    calls by command."""
    calls: dict[str, int] = {}
    for key, stats in info.items():
        if key.startswith("cmdstat_") and isinstance(stats, Mapping):
            calls[key.removeprefix("cmdstat_")] = int(stats["calls"])
    return calls


def group(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    """The values of one group, by detail: group(c, "grpc") -> {"svc/Method": n}."""
    head = f"{prefix}:"
    return {key.removeprefix(head): value for key, value in values.items() if key.startswith(head)}


def minus(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """What a counter gained between two readings (a key first seen later started at 0)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}
