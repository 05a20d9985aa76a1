"""Circuit-breaker transitions, published as events, and the breakers' state on request.

The breakers (gateway_service.domain.breaker) are per process and report each transition
synchronously, from inside a provider call; the transition is queued there and written to the
outbox by a background task, so no provider call waits for a database.
"""

from __future__ import annotations

import asyncio

import structlog

from common.aio import next_or_stop, wait_any
from common.errors import DependencyUnavailable
from gateway_service.domain import events
from gateway_service.domain.breaker import BreakerSnapshot, Transition
from gateway_service.service_layer.ports import UnitOfWorkFactory
from gateway_service.service_layer.providers import ProviderRouter

log = structlog.get_logger(__name__)

# Retries of a transition's event while the database is down: quick at first, then every 5 s.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


class BreakerEvents:
    def __init__(self, *, uow: UnitOfWorkFactory, providers: ProviderRouter) -> None:
        self._uow = uow
        self._providers = providers
        self._transitions: asyncio.Queue[Transition] = asyncio.Queue()

    def provider_status(self) -> list[tuple[int, BreakerSnapshot]]:
        return self._providers.status()

    def on_breaker_transition(self, transition: Transition) -> None:
        """Called by the breakers (synchronously); published by `publish_breaker_transitions`."""
        log.warning(
            "circuit_breaker.transition",
            provider=transition.name,
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
        )
        self._transitions.put_nowait(transition)

    async def publish_breaker_transitions(self, stop: asyncio.Event) -> None:
        """Runs for the life of the service: every breaker transition becomes an event."""
        sequence = 0
        while (transition := await next_or_stop(self._transitions, stop)) is not None:
            sequence += 1
            fact = _breaker_fact(transition, sequence)
            try:
                await self._publish(fact, stop)
            except Exception:
                # A bug in one event must not stop the next from being published.
                log.exception("circuit_breaker.event_lost", provider=transition.name)

    async def _publish(self, fact: events.CircuitBreakerStateChanged, stop: asyncio.Event) -> None:
        """Written once the database answers: an outage is a wait, not a lost event (breakers
        open most often when everything is failing, the database included). Transitions
        queue behind it in order; a stop gives up the wait."""
        delay_s = RETRY_FIRST_S
        while True:
            try:
                async with self._uow() as uow:
                    uow.publish(fact)
                    await uow.commit()
                return
            except DependencyUnavailable as exc:
                log.warning(
                    "circuit_breaker.event_waiting", provider=fact.provider, error=exc.message
                )
            await wait_any(stop, at_most_s=delay_s)
            if stop.is_set():
                log.warning("circuit_breaker.event_unpublished_at_stop", provider=fact.provider)
                return
            delay_s = min(delay_s * 2, RETRY_MAX_S)


def _breaker_fact(transition: Transition, sequence: int) -> events.CircuitBreakerStateChanged:
    return events.CircuitBreakerStateChanged(
        provider=transition.name,
        from_state=transition.from_state.value,
        to_state=transition.to_state.value,
        calls=transition.snapshot.calls,
        failures=transition.snapshot.failures,
        slow_calls=transition.snapshot.slow_calls,
        sequence=sequence,
    )
