"""A suite of the recovery tests' own: its own databases and streams (so a sweep sees only
the payments these tests make, never another test's), simulators it can misbehave, and a
wallet whose own hold sweeper waits an hour (so the worker is what releases expired holds)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest_asyncio

from common.config import Settings
from recovery_worker.bootstrap import Connections, build_sweeps
from recovery_worker.service_layer.sweeps import Sweep
from tests.conftest import InfraUrls, Suite, migrated_databases, running_suite

NOT_FOUND_GRACE_MS = 300


@dataclass
class Rig:
    suite: Suite
    http: aiohttp.ClientSession

    @property
    def settings(self) -> Settings:
        return self.suite.settings

    async def chaos(self, **knobs: Any) -> None:
        url = f"{self.suite.simulator_url}/_sim/config"
        async with self.http.patch(url, json=knobs) as response:
            assert response.status == 200, await response.text()

    async def calm(self) -> None:
        await self.chaos(
            timeout_rate=0, drop_rate=0, decline_rate=0, webhook_delay_rate=0, settle_delay_ms=50
        )

    async def provider_statuses(self, references: set[str]) -> list[str]:
        """The statuses of the provider's operations with these references (the gateway's
        operation ids): other tests' operations, some held for minutes on purpose, do not
        count."""
        async with self.http.get(f"{self.suite.simulator_url}/_sim/operations") as response:
            body = await response.json()
        return [op["status"] for op in body["operations"] if op["reference"] in references]


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def rig(migrated: Settings, infra_urls: InfraUrls) -> AsyncIterator[Rig]:
    run = uuid.uuid4().hex[:6]
    own = migrated.model_copy(
        update={
            "database_prefix": f"{migrated.database_prefix}r{run}_",
            "stream_prefix": f"{migrated.stream_prefix}r{run}.",
            "provider_timeout_ms": 500,
            "wallet_hold_sweep_interval_ms": 3_600_000,
            "recovery_pending_after_s": 60.0,
            # How long the gateway waits before it believes a provider that has no record of
            # an operation whose outcome was unknown; its own clock, so kept short here.
            "sync_not_found_grace_ms": NOT_FOUND_GRACE_MS,
            # These tests time requests out on purpose, many in a row on a slow machine; the
            # circuit breaker they could open is not what they test (test_routing does).
            "breaker_minimum_calls": 10_000,
        }
    )
    with migrated_databases(own, drop=infra_urls.external):
        async with running_suite(own) as suite, aiohttp.ClientSession() as http:
            rig = Rig(suite, http)
            await rig.calm()
            yield rig


@pytest_asyncio.fixture(loop_scope="session")
async def connections(rig: Rig) -> AsyncIterator[Connections]:
    opened = Connections.open(rig.settings)
    yield opened
    await opened.close()


def sweep(rig: Rig, connections: Connections, name: str) -> Sweep:
    return next(s for s in build_sweeps(rig.settings, connections) if s.name == name)


def later(hours: float = 1) -> datetime:
    """An hour from now: every threshold has passed, and nobody slept for it."""
    return datetime.now(UTC) + timedelta(hours=hours)
