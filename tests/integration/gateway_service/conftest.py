"""A gateway of its own for the provider tests: its own database and streams, two real
simulator servers it can misbehave, and its own webhook adapter, so breaking the providers
here never disturbs the shared suite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web

from common.config import Settings
from common.grpc.auth import bearer_channel
from common.grpc.server import ServiceRuntime
from common.ports import free_port
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.conftest import start_simulators, with_providers
from tests.tokens import make_token


@dataclass
class Simulators:
    http: aiohttp.ClientSession
    urls: dict[str, str]

    async def configure(self, name: str, **knobs: Any) -> None:
        async with self.http.patch(f"{self.urls[name]}/_sim/config", json=knobs) as response:
            assert response.status == 200, await response.text()

    async def reset(self) -> None:
        for name in self.urls:
            await self.configure(
                name,
                error_rate=0,
                timeout_rate=0,
                decline_rate=0,
                outage=False,
                settle_delay_ms=100,
                webhook_duplicate_rate=0,
                webhook_delay_rate=0,
                webhook_reorder_rate=0,
            )

    async def keys(self, name: str) -> set[str]:
        async with self.http.get(f"{self.urls[name]}/_sim/operations") as response:
            body = await response.json()
        return {op["idempotency_key"] for op in body["operations"]}


@dataclass
class Rig:
    settings: Settings
    gateway: gateway_pb2_grpc.GatewayServiceAsyncStub
    sims: Simulators
    webhook_base: str

    async def charge(self, key: str, amount_minor: int = 1250, **extra: Any) -> Any:
        request = gateway_pb2.ChargeRequest(
            idempotency_key=key,
            payment_method=extra.get("payment_method", "pm_card_visa"),
            reference=extra.get("reference", key),
        )
        request.amount.amount_minor, request.amount.currency = amount_minor, "EUR"
        return await self.gateway.Charge(request, timeout=extra.get("timeout", 5.0))

    async def operation(self, operation_id: str) -> Any:
        return await self.gateway.GetOperation(
            gateway_pb2.GetOperationRequest(operation_id=operation_id)
        )

    async def wait_for(
        self, operation_id: str, done: Callable[[Any], bool], timeout_s: float = 10.0
    ) -> Any:
        async with asyncio.timeout(timeout_s):
            while True:
                operation = await self.operation(operation_id)
                if done(operation):
                    return operation
                await asyncio.sleep(0.05)

    async def breakers(self) -> dict[str, Any]:
        response = await self.gateway.GetProviderStatus(gateway_pb2.GetProviderStatusRequest())
        return {p.provider: p for p in response.providers}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rig(migrated: Settings) -> AsyncIterator[Rig]:
    from gateway_service import bootstrap as gateway
    from webhook_adapter.app import start as start_webhook

    run = uuid.uuid4().hex[:6]
    ports = (free_port(), free_port())
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    settings = with_providers(
        migrated.model_copy(
            update={
                "database_prefix": f"{migrated.database_prefix}g{run}_",
                "stream_prefix": f"{migrated.stream_prefix}g{run}.",
                "provider_timeout_ms": 500,
                "provider_attempts": 2,
                "breaker_minimum_calls": 4,
                "breaker_reset_timeout_ms": 1000,
                "breaker_half_open_calls": 2,
                "sync_not_found_grace_ms": 0,
            }
        ),
        *urls,
    )
    gateway.DATABASE.migrate(settings)
    runtime: ServiceRuntime = await gateway.build(settings, "127.0.0.1:0")
    await runtime.start()
    target = f"127.0.0.1:{runtime.port}"
    settings = settings.model_copy(update={"gateway_target": target})
    runners: list[web.AppRunner] = []
    http = aiohttp.ClientSession()
    channel = bearer_channel(target, make_token())
    try:
        webhook_runner, webhook_port = await start_webhook(settings, "127.0.0.1:0")
        runners.append(webhook_runner)
        webhook_base = f"http://127.0.0.1:{webhook_port}"
        runners.extend(await start_simulators(webhook_base, ports))
        sims = Simulators(http, dict(zip(("sim-primary", "sim-secondary"), urls, strict=True)))
        await sims.reset()
        yield Rig(settings, gateway_pb2_grpc.GatewayServiceStub(channel), sims, webhook_base)
    finally:
        await channel.close()
        await http.close()
        for runner in reversed(runners):
            await runner.cleanup()
        await runtime.stop(grace=0.5)
