"""Facts the gateway publishes about provider operations (past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from common.money import Money


@dataclass(frozen=True, slots=True)
class OperationFact:
    """What every event about an operation carries. Never the payment method."""

    operation_id: str
    kind: str
    status: str
    amount: Money
    reference: str
    idempotency_key: str
    provider: str
    provider_reference: str
    failure_reason: str
    version: int
    # The provider event that caused this fact, when one did.
    causation_id: str = ""


@dataclass(frozen=True, slots=True)
class OperationStatusChanged(OperationFact):
    """The operation reached the outcome `status` (published as `<kind>.<status>`). A move
    to pending is not announced: nobody acts on it (see Operation._move)."""


@dataclass(frozen=True, slots=True)
class ContradictingOutcomeReceived(OperationFact):
    """The provider reported `status` for an operation already final with the other outcome.

    The operation keeps its state; this fact is for a manual review to pick up.
    """


@dataclass(frozen=True, slots=True)
class OperationOutcomeUnknown(OperationFact):
    """The provider was asked and did not answer in time: it may have acted. Published as
    `operation.unknown`; the operation stays open until the provider says what happened."""


@dataclass(frozen=True, slots=True)
class ProviderReportMismatched(OperationFact):
    """A verified provider report names this operation but disagrees with it (amount,
    currency or provider reference). Nothing is applied; it opens a manual review."""


@dataclass(frozen=True, slots=True)
class WebhookRecorded:
    """A provider callback recorded for the first time (`webhook.received`)."""

    provider: str
    provider_event_id: str
    event_type: str
    operation_id: str
    outcome: str


@dataclass(frozen=True, slots=True)
class WebhookRejected:
    """A provider callback we did not apply (`webhook.rejected`): unverifiable at the edge."""

    provider: str
    provider_event_id: str
    event_type: str
    operation_id: str
    outcome: str


@dataclass(frozen=True, slots=True)
class CircuitBreakerStateChanged:
    """`circuit_breaker.<to_state>`: a provider's breaker changed state."""

    provider: str
    from_state: str
    to_state: str
    calls: int
    failures: int
    slow_calls: int
    # A per-process sequence: breakers live in each gateway replica.
    sequence: int


class Facts:
    """Events that belong to no aggregate, tracked by the unit of work like one."""

    def __init__(self, *facts: object) -> None:
        self._facts = list(facts)

    def pull_events(self) -> list[object]:
        pulled, self._facts = self._facts, []
        return pulled


GatewayEvent = (
    OperationStatusChanged
    | ContradictingOutcomeReceived
    | OperationOutcomeUnknown
    | ProviderReportMismatched
)
