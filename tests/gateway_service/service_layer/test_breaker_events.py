"""Circuit-breaker transitions, published as events."""

from __future__ import annotations

import asyncio
import contextlib

from common.errors import DependencyUnavailable
from gateway_service.domain import events
from gateway_service.domain.provider import (
    ProviderNotProcessed,
)
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.providers import ProviderRouter
from tests.gateway_service.conftest import (
    PRIMARY,
    FakeDatabase,
    FakeProvider,
    FakeUnitOfWork,
    charge,
    guarded,
)


async def test_breaker_transitions_are_published_as_events(
    fake_db: FakeDatabase, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    service_ref: list[GatewayService] = []
    primary = guarded(fake_provider, minimum_calls=2)
    router = ProviderRouter([primary, guarded(secondary)])
    service = GatewayService(uow=lambda: FakeUnitOfWork(fake_db), providers=router)
    service_ref.append(service)
    primary.breaker._on_transition = service.breakers.on_breaker_transition
    stop = asyncio.Event()
    publisher = asyncio.create_task(service.breakers.publish_breaker_transitions(stop))
    fake_provider.answers = [ProviderNotProcessed("503")] * 2

    await charge(service)
    await asyncio.sleep(0.01)
    stop.set()
    publisher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publisher

    [opened] = [e for e in fake_db.published if isinstance(e, events.CircuitBreakerStateChanged)]
    assert (opened.provider, opened.from_state, opened.to_state) == (PRIMARY, "closed", "open")


class DownThenUp(FakeUnitOfWork):
    """The database refuses the first `down` commits of a breaker event, as while PostgreSQL
    restarts (the charge that trips the breaker commits as usual)."""

    down = 2
    publishing = False

    def publish(self, *facts: object) -> None:
        self.publishing = True
        super().publish(*facts)

    async def commit(self) -> None:
        if self.publishing and DownThenUp.down:
            DownThenUp.down -= 1
            raise DependencyUnavailable("database unavailable during commit")
        await super().commit()


async def test_a_transition_waits_out_a_database_outage_instead_of_being_lost(
    fake_db: FakeDatabase, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    primary = guarded(fake_provider, minimum_calls=2)
    router = ProviderRouter([primary, guarded(secondary)])
    service = GatewayService(uow=lambda: DownThenUp(fake_db), providers=router)
    primary.breaker._on_transition = service.breakers.on_breaker_transition
    stop = asyncio.Event()
    publisher = asyncio.create_task(service.breakers.publish_breaker_transitions(stop))
    fake_provider.answers = [ProviderNotProcessed("503")] * 2

    await charge(service)
    for _ in range(100):
        if any(isinstance(e, events.CircuitBreakerStateChanged) for e in fake_db.published):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await publisher

    [opened] = [e for e in fake_db.published if isinstance(e, events.CircuitBreakerStateChanged)]
    assert (opened.from_state, opened.to_state) == ("closed", "open")
    assert DownThenUp.down == 0
