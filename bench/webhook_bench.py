"""Webhooks accepted per second through the webhook adapter into the gateway.

Each request is a freshly signed provider webhook with its own event id, so every one is a
first delivery: verified, parsed, forwarded over gRPC, and durably recorded by the gateway (one
PostgreSQL transaction) before the 2xx. The events name no existing operation, so they are
recorded as unmatched: the cost measured is the adapter and the gateway's recording, not a
payment flow. Beside it, in the same run, a trivial request to the same adapter (GET /healthz)
as the baseline.

    measure(webhook_url="http://127.0.0.1:8080/webhooks/sim-primary",
            signing=WebhookSigning(secret="whsec_...", format="standard"))
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bench.context import BenchContext
from provider_simulator.signing import Signer


@dataclass(frozen=True)
class WebhookSigning:
    """How the provider behind `webhook_url` signs: its secret and its signature format."""

    secret: str
    format: Literal["standard", "stripe"] = "standard"


def _webhook(signer: Signer) -> tuple[str, dict[str, str]]:
    event_id = f"evt_bench_{uuid.uuid4().hex}"
    body = json.dumps(
        {
            "id": event_id,
            "type": "charge.succeeded",
            "created": int(time.time()),
            "data": {
                "id": f"ch_bench_{uuid.uuid4().hex[:24]}",
                "reference": str(uuid.uuid4()),
                "amount_minor": 1250,
                "currency": "EUR",
                "status": "succeeded",
            },
        },
        separators=(",", ":"),
    )
    return body, {"content-type": "application/json", **signer.headers(event_id, body)}


async def _closed_loop(
    request: Callable[[], Awaitable[bool]], *, duration_s: float, concurrency: int
) -> tuple[int, list[float], int]:
    """`concurrency` workers each sending back to back until the time is up."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await request()
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, failures


async def _ok(request: Any) -> bool:
    """True for a 200; a refused or broken connection counts as a failure, not a crash."""
    try:
        async with request as response:
            await response.read()
            return bool(response.status == 200)
    except aiohttp.ClientError:
        await asyncio.sleep(0.01)  # do not spin on a server that is down
        return False


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    *,
    webhook_url: str,
    signing: WebhookSigning,
    duration_s: float = 10.0,
    concurrency: int = 32,
) -> dict[str, float]:
    signer = Signer(signing.format, signing.secret)
    parts = urlsplit(webhook_url)
    healthz = urlunsplit((parts.scheme, parts.netloc, "/healthz", "", ""))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post_webhook() -> bool:
            body, headers = _webhook(signer)
            return await _ok(session.post(webhook_url, data=body, headers=headers))

        async def get_healthz() -> bool:
            return await _ok(session.get(healthz))

        await _closed_loop(post_webhook, duration_s=0.5, concurrency=4)  # warm-up
        started = time.perf_counter()
        count, latencies, failures = await _closed_loop(
            post_webhook, duration_s=duration_s, concurrency=concurrency
        )
        webhook_elapsed = time.perf_counter() - started
        started = time.perf_counter()
        trivial, _, _ = await _closed_loop(
            get_healthz, duration_s=min(duration_s, 3.0), concurrency=concurrency
        )
        trivial_elapsed = time.perf_counter() - started
    trivial_per_s = trivial / trivial_elapsed
    return {
        "webhooks_per_s": count / webhook_elapsed,
        "webhook_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "webhook_p99_ms": _percentile(latencies, 0.99) * 1000,
        "webhook_failures": float(failures),
        "trivial_http_per_s": trivial_per_s,
        # The key bench/figures.py compares webhooks_per_s with.
        "http_trivial_per_s": trivial_per_s,
    }


async def measure_in_bench(ctx: BenchContext) -> dict[str, float]:
    """The `make bench` section: `Section("webhooks through the adapter into the gateway",
    webhook_bench.measure_in_bench)` in bench/harness.py. Signs as the primary simulator."""
    primary = ctx.settings.provider_configs()[0]
    return await measure(
        webhook_url=f"http://{ctx.settings.webhook_listen}/webhooks/{primary.name}",
        signing=WebhookSigning(
            primary.webhook_secrets[0].get_secret_value(), primary.signature_format
        ),
        duration_s=ctx.options.open_duration_s,
        concurrency=ctx.options.clients,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/webhooks/sim-primary")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--format", choices=["standard", "stripe"], default="standard")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    result = asyncio.run(
        measure(
            webhook_url=args.url,
            signing=WebhookSigning(args.secret, args.format),
            duration_s=args.duration,
            concurrency=args.concurrency,
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
