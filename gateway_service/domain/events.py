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
    """The operation moved to `status` (published as `<kind>.<status>`)."""


@dataclass(frozen=True, slots=True)
class ContradictingOutcomeReceived(OperationFact):
    """The provider reported `status` for an operation already final with the other outcome.

    The operation keeps its state; this fact is for a manual review to pick up.
    """


GatewayEvent = OperationStatusChanged | ContradictingOutcomeReceived
