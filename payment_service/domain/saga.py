"""What a payment's saga holds beyond its status (its hold and recovery points), and what it
exchanges with the provider through the gateway: the call it asks for and the answer it gets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from common.money import Money


class HoldState(StrEnum):
    NONE = ""
    PLACED = "placed"
    CAPTURED = "captured"
    RELEASED = "released"


@dataclass
class SagaState:
    """What a payment's saga has done so far beyond its status: its recovery points."""

    hold_id: str = ""
    hold: HoldState = HoldState.NONE
    # The provider call this payment has asked for ("" until its recovery point is recorded:
    # until then the payment can still be cancelled).
    provider_call: str = ""
    provider: str = ""
    destination: str = ""  # a withdrawal's payout destination
    charge_operation_id: str = ""  # a refund's: the deposit's charge
    compensation_attempts: int = 0  # a refunding deposit's refund attempts that failed
    last_failed_operation: str = ""  # the last of them, counted once however often reported
    refunded_minor: int = 0  # a deposit's refunds that succeeded
    refund_reserved_minor: int = 0  # a deposit's refunds in flight
    # A refunding deposit's current refund attempt at the gateway, once the gateway named it,
    # and what it said of it ("accepted", or "unknown" when the provider did not answer).
    refund_operation_id: str = ""
    refund_outcome: str = ""
    # Attempts the recovery worker made at a refunding deposit that left it unsettled.
    recovery_attempts: int = 0
    # When the payment service's own resume sweep last picked the saga up (ISO 8601): kept
    # apart from updated_at, which says when the payment last changed.
    resumed_at: str = ""


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """A saga step that asks the provider: which call, with what key, for how much."""

    operation: str  # "charge", "payout" or "refund"
    idempotency_key: str
    amount: Money
    payment_method: str = ""  # charge
    destination: str = ""  # payout
    charge_operation_id: str = ""  # refund: the gateway operation that took the money


class ProviderAnswer(StrEnum):
    """What the gateway answered a saga step that asks the provider (charge, payout, refund)."""

    ACCEPTED = "accepted"  # the provider has it; its outcome comes as an event
    DECLINED = "declined"  # refused outright: no money moved
    UNKNOWN = "unknown"  # no answer (timeout): money may have moved; ask again, never fail
