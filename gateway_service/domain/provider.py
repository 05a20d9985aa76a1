"""What the gateway asks of a payment provider and what it can hear back, in our own terms.

Provider adapters translate their transport's failures into this family once, at their edge.
The family is drawn by the one question that matters for money: can the provider have acted?

    ProviderError
    ├── ProviderRejected       the provider refused the request: nothing happened
    ├── ProviderNotProcessed   the request certainly did nothing (connection refused, an
    │   │                      explicit "not processed" 503): another provider may be asked
    │   └── CircuitOpen        not even sent: this provider's breaker is open
    └── ProviderUnavailable    no usable answer (a 5xx, a broken answer): the outcome is unknown
        └── ProviderTimeout    asked, but no answer in time: the outcome is unknown
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from common.money import Money

# Providers commonly accept up to 255 characters for tokens and event ids.
MAX_PROVIDER_FIELD = 255


class ProviderError(Exception):
    """A provider call did not end in an accepted request."""


class ProviderRejected(ProviderError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProviderNotProcessed(ProviderError):
    """The provider certainly did not act on the request; failing over is safe."""


class CircuitOpen(ProviderNotProcessed):
    def __init__(self, provider: str) -> None:
        super().__init__(f"the circuit breaker of {provider} is open")
        self.provider = provider


class ProviderUnavailable(ProviderError):
    """Whether the provider acted is unknown; only the provider can tell us later."""


class ProviderTimeout(ProviderUnavailable):
    """Never retried as a new request and never taken as a failure: the provider may have
    acted. Only asking it later (SyncOperation) settles what happened."""


class InstructionKind(StrEnum):
    CHARGE = "charge"
    PAYOUT = "payout"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class Instruction:
    """One request to a provider: a charge, a payout or a refund."""

    kind: InstructionKind
    # Sent as the provider's idempotency key, so asking again can never move money twice.
    # Derived by our caller from the payment and its step (e.g. "<payment_id>:charge").
    idempotency_key: str
    amount: Money
    # The payment method (charge), the destination (payout) or the provider's id of the
    # charge being refunded (refund). A credential for charges: never logged.
    instrument: str = field(repr=False)
    # Our operation id; providers echo it in their events.
    reference: str


@dataclass(frozen=True, slots=True)
class ProviderAcceptance:
    """The provider took the request; its outcome comes later as a provider event."""

    provider_reference: str


class ReportedStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The provider has no such operation: it never acted on our request.
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The provider's answer to "what became of this operation?"."""

    status: ReportedStatus
    provider_reference: str = ""
    failure_reason: str = ""
    amount: Money | None = None
