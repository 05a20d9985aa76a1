"""What callers ask of the payment service: the commands that create payments, the
idempotency claim each makes on its caller's key, and what a listing may be narrowed to."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from common.errors import IdempotencyConflict
from common.money import Money
from payment_service.domain.status import PaymentKind, PaymentStatus

if TYPE_CHECKING:
    from payment_service.domain.model import Payment

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A caller's idempotency key, the request it was first used for (as a fingerprint), the
    payment that request made, and the response it got once there is one: the payment as of
    `response_version`, or the refusal (`error_reason`, `error_message`). Keys are scoped to
    the caller: two callers may use the same key for different payments."""

    caller: str
    key: str
    fingerprint: str
    payment_id: str
    response_version: int | None = None
    error_reason: str = ""
    error_message: str = ""

    def check_same_request(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise IdempotencyConflict(
                f"idempotency_key {self.key!r} was already used for a different request"
            )

    @property
    def answered(self) -> bool:
        return self.response_version is not None


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DepositRequest:
    """What a CreateDeposit asks for; a replayed idempotency key must ask for the same."""

    idempotency_key: str
    account_id: str
    amount: Money
    payment_method: str
    caller: str = ANONYMOUS

    @property
    def fingerprint(self) -> str:
        """The request's identity for idempotency: every field that shapes the payment."""
        return _fingerprint(
            "deposit",
            self.account_id,
            str(self.amount.amount_minor),
            self.amount.currency,
            self.payment_method,
        )

    def claim(self, payment_id: str) -> IdempotencyClaim:
        # A deposit is answered by the commit that creates it: its response is version 1.
        return IdempotencyClaim(
            self.caller, self.idempotency_key, self.fingerprint, payment_id, response_version=1
        )


@dataclass(frozen=True, slots=True)
class WithdrawalRequest:
    idempotency_key: str
    account_id: str
    amount: Money
    destination: str
    caller: str = ANONYMOUS

    @property
    def fingerprint(self) -> str:
        return _fingerprint(
            "withdrawal",
            self.account_id,
            str(self.amount.amount_minor),
            self.amount.currency,
            self.destination,
        )

    def claim(self, payment_id: str) -> IdempotencyClaim:
        # Answered only once the hold is placed or refused (on the request path).
        return IdempotencyClaim(self.caller, self.idempotency_key, self.fingerprint, payment_id)


@dataclass(frozen=True, slots=True)
class TransferRequest:
    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: Money
    caller: str = ANONYMOUS

    @property
    def fingerprint(self) -> str:
        return _fingerprint(
            "transfer",
            self.source_account_id,
            self.destination_account_id,
            str(self.amount.amount_minor),
            self.amount.currency,
        )

    def claim(self, payment_id: str) -> IdempotencyClaim:
        return IdempotencyClaim(self.caller, self.idempotency_key, self.fingerprint, payment_id)


@dataclass(frozen=True, slots=True)
class RefundRequest:
    idempotency_key: str
    payment_id: str
    amount: Money | None  # None: whatever is left to refund
    caller: str = ANONYMOUS

    @property
    def fingerprint(self) -> str:
        amount = self.amount
        return _fingerprint(
            "refund",
            self.payment_id,
            str(amount.amount_minor) if amount else "rest",
            amount.currency if amount else "",
        )

    def claim(self, payment_id: str) -> IdempotencyClaim:
        return IdempotencyClaim(self.caller, self.idempotency_key, self.fingerprint, payment_id)


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """What a listing may be narrowed to; None means any."""

    kind: PaymentKind | None = None
    status: PaymentStatus | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, payment: Payment) -> bool:
        created = payment.created_at
        return (
            (self.kind is None or payment.kind is self.kind)
            and (self.status is None or payment.status is self.status)
            and (
                self.created_after is None
                or (created is not None and created >= self.created_after)
            )
            and (
                self.created_before is None
                or (created is not None and created < self.created_before)
            )
        )


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """The response of the key that made a payment: the payment as it stands at `version`,
    or the refusal (`error_reason`, `error_message`) it was answered with."""

    payment_id: str
    version: int
    error_reason: str = ""
    error_message: str = ""
