"""The payment aggregate and its state machine. Plain Python: no SQL, no gRPC.

    initiated ──► pending ──► completed
        │            │  └───► refunding ──► refunded
        │            │              └─────► requires_manual_review
        ├────────────┴──► failed
        └──► cancelled

States only move forward (invariant 6). Terminal states are final; a payment in
requires_manual_review is resolved by an operator into a terminal state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeAlias

from common.errors import FailedPrecondition, IdempotencyConflict
from common.ids import new_id
from common.money import Money
from payment_service.domain import events


class PaymentKind(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"
    REFUND = "refund"


class PaymentStatus(StrEnum):
    INITIATED = "initiated"
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    REQUIRES_MANUAL_REVIEW = "requires_manual_review"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


PaymentEvent: TypeAlias = events.PaymentStatusChanged | events.ReviewRequested

S = PaymentStatus
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.REFUNDED, S.CANCELLED})
ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.INITIATED: frozenset({S.PENDING, S.FAILED, S.CANCELLED, S.REQUIRES_MANUAL_REVIEW}),
    S.PENDING: frozenset({S.COMPLETED, S.FAILED, S.REFUNDING, S.REQUIRES_MANUAL_REVIEW}),
    S.REFUNDING: frozenset({S.REFUNDED, S.REQUIRES_MANUAL_REVIEW}),
    S.REQUIRES_MANUAL_REVIEW: frozenset({S.COMPLETED, S.FAILED, S.REFUNDED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.REFUNDED: frozenset(),
    S.CANCELLED: frozenset(),
}


class ChargeAnswer(StrEnum):
    """What the gateway answered the saga's charge step."""

    ACCEPTED = "accepted"  # the provider has it; its outcome comes as an event
    DECLINED = "declined"  # refused outright: no money moved
    UNKNOWN = "unknown"  # no answer (timeout): money may have moved; ask again, never fail


class InvalidTransition(FailedPrecondition):
    def __init__(self, payment_id: str, current: PaymentStatus, target: PaymentStatus) -> None:
        super().__init__(f"payment {payment_id} cannot move from {current} to {target}")
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class StatusChange:
    sequence: int
    from_status: PaymentStatus | None
    to_status: PaymentStatus
    reason: str
    occurred_at: datetime


def charge_key(payment_id: str) -> str:
    """The gateway idempotency key of a deposit's charge step."""
    return f"{payment_id}:charge"


@dataclass(frozen=True, slots=True)
class ChargeInstruction:
    payment_id: str
    idempotency_key: str
    amount: Money
    payment_method: str

    @classmethod
    def for_deposit(cls, payment_id: str, amount: Money, payment_method: str) -> ChargeInstruction:
        """The deposit's charge step; its key is derived from the payment, so a retried or
        resumed step can never charge twice."""
        return cls(payment_id, charge_key(payment_id), amount, payment_method)


ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A caller's idempotency key, the request it was first used for (as a fingerprint), and
    the payment that request made. Keys are scoped to the caller: two callers may use the
    same key for different payments."""

    caller: str
    key: str
    fingerprint: str
    payment_id: str

    def check_same_request(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise IdempotencyConflict(
                f"idempotency_key {self.key!r} was already used for a different request"
            )


@dataclass(frozen=True, slots=True)
class PaymentStep:
    """One entry of a payment's audit trail: every step of its saga and every transition,
    in order (`step`), with what it concerned (`data`) and, for a failure, why (`error`).

    Deposit, success:  status.initiated, charge.requested, charge.accepted, status.pending,
                       provider.charge_succeeded, credit.completed, status.completed
    Deposit, the credit impossible after the charge: ... provider.charge_succeeded,
                       credit.failed, compensation.started, status.refunding
    A provider contradicting a final state: review.requested
    """

    step: int
    event_type: str
    occurred_at: datetime
    data: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


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
        canonical = "|".join(
            (
                "deposit",
                self.account_id,
                str(self.amount.amount_minor),
                self.amount.currency,
                self.payment_method,
            )
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def claim(self, payment_id: str) -> IdempotencyClaim:
        return IdempotencyClaim(self.caller, self.idempotency_key, self.fingerprint, payment_id)


@dataclass
class Payment:
    payment_id: str
    kind: PaymentKind
    status: PaymentStatus
    amount: Money
    idempotency_key: str
    source_account_id: str = ""
    destination_account_id: str = ""
    payment_method: str = ""
    failure_reason: str = ""
    gateway_operation_id: str = ""
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Steps of the audit trail so far (stored); those recorded since loading.
    steps: int = 0
    new_changes: list[StatusChange] = field(default_factory=list, repr=False)
    new_steps: list[PaymentStep] = field(default_factory=list, repr=False)
    _events: list[PaymentEvent] = field(default_factory=list, repr=False)

    @classmethod
    def deposit(cls, request: DepositRequest) -> Payment:
        payment = cls(
            payment_id=new_id(),
            kind=PaymentKind.DEPOSIT,
            status=PaymentStatus.INITIATED,
            amount=request.amount,
            idempotency_key=request.idempotency_key,
            destination_account_id=request.account_id,
            payment_method=request.payment_method,
        )
        payment._record(None, PaymentStatus.INITIATED, "")
        return payment

    def as_of(self, change: StatusChange) -> Payment:
        """This payment as it stood right after `change` (one of its own, from its history):
        what a watcher is shown for each state it passed through."""
        latest = change.sequence == self.version
        return replace(
            self,
            status=change.to_status,
            version=change.sequence,
            updated_at=change.occurred_at,
            failure_reason=self.failure_reason if latest else "",
            new_changes=[],
            new_steps=[],
            _events=[],
        )

    def charge_instruction(self) -> ChargeInstruction:
        """What the deposit saga's charge step sends the gateway."""
        return ChargeInstruction.for_deposit(self.payment_id, self.amount, self.payment_method)

    def can_move_to(self, target: PaymentStatus) -> bool:
        return target in ALLOWED[self.status]

    # -- what the deposit saga hears; the aggregate decides what it means ----------------

    def record_charge_answer(
        self,
        answer: ChargeAnswer,
        *,
        operation_id: str,
        reason: str,
        requested_at: datetime | None = None,
    ) -> None:
        """The gateway's answer to the charge step. Only an INITIATED payment learns from it:
        later, the provider's own events (which may have overtaken the answer) decide."""
        if self.status is not PaymentStatus.INITIATED or answer is ChargeAnswer.UNKNOWN:
            return
        self._note(
            "charge.requested",
            {"idempotency_key": charge_key(self.payment_id)},
            at=requested_at,
        )
        if answer is ChargeAnswer.DECLINED:
            self._note("charge.declined", {"operation_id": operation_id}, error=reason)
            self.fail(reason or "charge_failed")
        else:
            self._note("charge.accepted", {"operation_id": operation_id})
            self.mark_pending(operation_id)

    def wants_credit_for_charge(self) -> bool:
        """Whether money the provider reports taken should now be credited to the wallet."""
        return self.status in (PaymentStatus.INITIATED, PaymentStatus.PENDING)

    def apply_charge_succeeded(
        self, *, operation_id: str, credited: bool, credit_refused: str = ""
    ) -> None:
        """The provider took the money. Credited: completed. The credit can never apply:
        refunding. Already settled: nothing. Failed or cancelled meanwhile: the provider
        contradicts us, and an operator must look (never an overwrite of a final state)."""
        if self.status is PaymentStatus.INITIATED:
            self.mark_pending(operation_id)
        if self.status is PaymentStatus.PENDING and (credited or credit_refused):
            self._note("provider.charge_succeeded", {"operation_id": operation_id})
        if self.status is PaymentStatus.PENDING and credited:
            self._note("credit.completed", {"operation_ref": f"{self.payment_id}:credit"})
            self.complete()
        elif self.status is PaymentStatus.PENDING and credit_refused:
            self._note("credit.failed", error=credit_refused)
            self._note("compensation.started", {"compensation": "refund"})
            self.start_refund(credit_refused)
        elif self.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED):
            detail = "and the wallet was credited" if credited else "after it ended"
            self._request_review("charge.succeeded", f"provider charged the payment {detail}")

    def apply_charge_failed(self, *, operation_id: str, reason: str) -> None:
        """The provider declined. A payment already settled the other way needs review."""
        if self.status is PaymentStatus.INITIATED:
            self.mark_pending(operation_id)
        if self.can_move_to(PaymentStatus.FAILED):
            self._note("provider.charge_failed", {"operation_id": operation_id}, error=reason)
            self.fail(reason or "charge_failed")
        elif self.status in (PaymentStatus.COMPLETED, PaymentStatus.REFUNDING):
            self._request_review("charge.failed", f"provider declined a {self.status} payment")

    def _request_review(self, provider_event: str, reason: str) -> None:
        self._note("review.requested", {"provider_event": provider_event}, error=reason)
        self._events.append(
            events.ReviewRequested(
                payment_id=self.payment_id,
                status=self.status.value,
                provider_event=provider_event,
                reason=reason,
                gateway_operation_id=self.gateway_operation_id,
                version=self.version,
            )
        )

    def mark_pending(self, gateway_operation_id: str) -> None:
        self.gateway_operation_id = gateway_operation_id
        self._move(PaymentStatus.PENDING, "")

    def complete(self) -> None:
        self._move(PaymentStatus.COMPLETED, "")

    def fail(self, reason: str) -> None:
        self.failure_reason = reason
        self._move(PaymentStatus.FAILED, reason)

    def start_refund(self, reason: str) -> None:
        self.failure_reason = reason
        self._move(PaymentStatus.REFUNDING, reason)

    def _move(self, target: PaymentStatus, reason: str) -> None:
        if not self.can_move_to(target):
            raise InvalidTransition(self.payment_id, self.status, target)
        previous, self.status = self.status, target
        self._record(previous, target, reason)

    def _record(self, previous: PaymentStatus | None, target: PaymentStatus, reason: str) -> None:
        self.version += 1
        now = datetime.now(UTC)
        self.updated_at = now
        self.created_at = self.created_at or now
        self.new_changes.append(StatusChange(self.version, previous, target, reason, now))
        self._note(f"status.{target}", {"from": previous.value if previous else ""}, at=now)
        self._events.append(
            events.PaymentStatusChanged(
                payment_id=self.payment_id,
                kind=self.kind.value,
                from_status=previous.value if previous else "",
                to_status=target.value,
                amount=self.amount,
                source_account_id=self.source_account_id,
                destination_account_id=self.destination_account_id,
                failure_reason=self.failure_reason,
                version=self.version,
                payment_method=self.payment_method,
            )
        )

    def _note(
        self,
        event_type: str,
        data: Mapping[str, str] | None = None,
        *,
        error: str = "",
        at: datetime | None = None,
    ) -> None:
        self.steps += 1
        occurred = at or datetime.now(UTC)
        self.new_steps.append(PaymentStep(self.steps, event_type, occurred, data or {}, error))

    @property
    def has_changes(self) -> bool:
        return bool(self.new_changes or self.new_steps)

    def pull_events(self) -> list[PaymentEvent]:
        pulled, self._events = self._events, []
        return pulled


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
