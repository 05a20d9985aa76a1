"""A real simulator on port 0, webhooking into a tiny real receiver, also on port 0."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from provider_simulator.app import start
from provider_simulator.settings import SimulatorSettings

# Deliberately not the development secret, so the tests prove the configured one is used.
TEST_SECRET = "whsec_" + base64.b64encode(b"provider-simulator-test-secret").decode()


@dataclass(frozen=True)
class ReceivedWebhook:
    body: str
    headers: dict[str, str]


@dataclass
class Receiver:
    url: str
    # Answered in order to incoming webhooks; once used up, every webhook gets 204.
    statuses: list[int] = field(default_factory=list)
    received: asyncio.Queue[ReceivedWebhook] = field(default_factory=asyncio.Queue)

    async def next(self) -> ReceivedWebhook:
        async with asyncio.timeout(3):
            return await self.received.get()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        receiver.received.put_nowait(ReceivedWebhook(body, dict(request.headers)))
        return web.Response(status=receiver.statuses.pop(0) if receiver.statuses else 204)

    app = web.Application()
    app.router.add_post("/webhooks/simulator", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/simulator"
    yield receiver
    await runner.cleanup()


@dataclass
class Sim:
    client: aiohttp.ClientSession  # with base_url set to the simulator

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.client.request(method, path, **kwargs) as response:
            return response.status, await response.json()

    async def charge(self, **overrides: Any) -> tuple[int, Any]:
        body = {
            "idempotency_key": "idem-1",
            "amount_minor": 1250,
            "currency": "EUR",
            "payment_method": "pm_card_visa",
            "reference": "pay_123",
            **overrides,
        }
        return await self.call("POST", "/v1/charges", json=body)

    async def events(self) -> list[dict[str, Any]]:
        _, body = await self.call("GET", "/_sim/events")
        events: list[dict[str, Any]] = body["events"]
        return events

    async def wait_for_event(
        self, event_id: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        for _ in range(150):
            event = next((e for e in await self.events() if e["id"] == event_id), None)
            if event is not None and done(event):
                return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"event {event_id} never reached the expected state")


StartSim = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def start_sim(receiver: Receiver) -> AsyncIterator[StartSim]:
    """Starts simulators with settings overrides; all are stopped at teardown."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start_with(**overrides: Any) -> Sim:
        settings = SimulatorSettings(
            **{
                "listen_host": "127.0.0.1",
                "listen_port": 0,
                "webhook_url": receiver.url,
                "settle_delay_ms": 0,
                "webhook_max_attempts": 3,
                "webhook_secret": TEST_SECRET,
                "data_dir": None,
                "seed": 7,
                **overrides,
            }
        )
        runner, port = await start(settings)
        cleanups.append(runner.cleanup)
        client = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}")
        cleanups.append(client.close)
        return Sim(client)

    yield start_with
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def sim(start_sim: StartSim) -> Sim:
    return await start_sim()
