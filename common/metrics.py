"""Prometheus metrics: each process serves its own `/metrics`, on PAYSUITE_METRICS_PORT.

Metrics live in prometheus-client's default registry (one process, one registry), so each
module declares its families at import time, beside the code it measures. Hot paths bind
label values once (`labels(...)` builds a tuple and takes a lock on every call) and keep the
child; the families here are counters and histograms whose update is one lock and an add.

Label values are always bounded: never an id, and text from outside (a provider's failure
reason, a currency, a payment method) goes through `BoundedLabel` first.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import structlog
from prometheus_client import start_http_server

log = structlog.get_logger(__name__)

# Latency of one call (gRPC, provider, handler): 1 ms to 10 s.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "other"
_SANE = re.compile(r"^[A-Za-z0-9_.:-]{1,48}$")
K = TypeVar("K")
V = TypeVar("V")


class MetricsServer(Protocol):
    def shutdown(self) -> None: ...
    def server_close(self) -> None: ...


def serve_metrics(port: int, host: str) -> tuple[MetricsServer, int] | None:
    """Serves `/metrics` on a daemon thread; None when `port` is 0 (metrics off).

    A plain thread beside the event loop: a scrape renders the registry under the GIL for a
    few milliseconds, and never waits on the loop, so a busy loop cannot fail a scrape.
    """
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics.serving", host=host, port=bound, path="/metrics")
    return server, bound


def stop_metrics(served: tuple[MetricsServer, int] | None) -> None:
    if served is not None:
        server, _ = served
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def metrics_for(process: str, port: int, host: str) -> Iterator[None]:
    """`/metrics` for the life of a `python -m` process; a port that cannot be bound stops
    the process with a short message (exit 1) rather than a traceback."""
    try:
        served = serve_metrics(port, host)
    except OSError as exc:
        print(
            f"{process}: cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    try:
        yield
    finally:
        stop_metrics(served)


class BoundedLabel:
    """Maps free text to a label value: the first `limit` distinct sane values are kept as
    they are, anything else is `other`, so an outside party cannot grow the series count."""

    def __init__(self, limit: int = 50) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        # Odd text never takes a slot, so it cannot crowd out the ordinary values that follow.
        if not _SANE.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
            return value


def cached(make: Callable[[K], V]) -> Callable[[K], V]:
    """Memoises `make` per key: the label children of a hot path, built once per key."""
    cache: dict[K, V] = {}

    def get(key: K) -> V:
        found = cache.get(key)
        if found is None:
            found = cache[key] = make(key)
        return found

    return get
