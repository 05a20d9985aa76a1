"""What the gateway asks of a payment provider and what it can hear back, in our own terms.

Provider adapters translate their transport's failures into this family once, at their edge:

    ProviderError
    ├── ProviderRejected       the provider refused the request: nothing happened
    └── ProviderUnavailable    no usable answer (connection refused, 5xx): outcome unknown
        └── ProviderTimeout    asked, but no answer in time: outcome unknown
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.money import Money


class ProviderError(Exception):
    """A provider call did not end in an accepted request."""


class ProviderRejected(ProviderError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProviderUnavailable(ProviderError):
    """Whether the provider acted is unknown; only the provider can tell us later."""


class ProviderTimeout(ProviderUnavailable):
    """Not retried on the spot: a provider too slow to answer once is no faster the second time."""


@dataclass(frozen=True, slots=True)
class ChargeInstruction:
    # Sent as the provider's idempotency key, so asking again can never charge twice.
    idempotency_key: str
    amount: Money
    payment_method: str = field(repr=False)
    # Our operation id; providers echo it in their events.
    reference: str


@dataclass(frozen=True, slots=True)
class ProviderAcceptance:
    """The provider took the request; its outcome comes later as a provider event."""

    provider_reference: str
