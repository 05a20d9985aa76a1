"""The payment aggregate and its state machine. Plain Python: no SQL, no gRPC.

    initiated ──► pending ──► completed ──► partially_refunded ──► refunded
        │  │         │  └───► refunding ──► refunded       ▲
        │  │         │              └─────► requires_manual_review ──► completed | failed | refunded
        │  └─────────┴──► failed                   (completed ──► refunded, all at once)
        ├──► completed                 (a transfer: one atomic wallet operation)
        └──► cancelled                 (before the provider was asked)

The states, and who moves a payment into each:
- initiated: recorded, answered to the caller; nothing asked of the provider yet. A withdrawal
  or refund in this state may already hold its funds (`hold.placed` in its audit trail).
- pending: the provider has it (charge, payout or refund accepted); its outcome comes as a
  provider event, or by asking the provider (the recovery worker).
- completed: money moved as asked. For a deposit it may later be refunded.
- failed: nothing moved (declined, refused, or compensated: a withdrawal's hold is released
  before it fails).
- cancelled: stopped by the caller before the provider was asked; its hold is then released.
- refunding: a deposit whose money the provider took but the wallet could never take in; the
  saga refunds it (a compensation), retrying a few times.
- refunded / partially_refunded: a deposit's money went back (all of it / part of it) through
  refund payments, or its compensation refund succeeded.
- requires_manual_review: the saga cannot decide (a compensation kept failing or stayed
  unsettled through the recovery worker's attempts, or a capture was refused after a
  payout); a review case is opened, and an operator resolves it into completed, failed or
  refunded (`resolve_review`).

Final states (failed, cancelled, refunded) never change again. Settled states (completed,
partially_refunded) never change by what a provider says: a late or contradicting provider
event opens a review instead (`payment.review_requested`); only a refund of the payment
itself moves them on (invariant 6).
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
from payment_service.domain.errors import (
    PaymentNotCancellable,
    PaymentNotRefundable,
    RefundExceedsCaptured,
    ResolutionContradictsPayment,
    ReviewPaymentInFlight,
)
from payment_service.domain.review import Decision, Resolution, ReviewOpening, ReviewReason


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
    PARTIALLY_REFUNDED = "partially_refunded"
    REQUIRES_MANUAL_REVIEW = "requires_manual_review"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Final or settled: nothing the provider says moves it any more."""
        return self in TERMINAL


PaymentEvent: TypeAlias = (
    events.PaymentStatusChanged | events.ReviewRequested | events.PaymentStepRecorded
)

S = PaymentStatus
FINAL = frozenset({S.FAILED, S.REFUNDED, S.CANCELLED})
SETTLED = frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED})
TERMINAL = FINAL | SETTLED
ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.INITIATED: frozenset(
        {S.PENDING, S.COMPLETED, S.FAILED, S.CANCELLED, S.REQUIRES_MANUAL_REVIEW}
    ),
    S.PENDING: frozenset({S.COMPLETED, S.FAILED, S.REFUNDING, S.REQUIRES_MANUAL_REVIEW}),
    S.REFUNDING: frozenset({S.REFUNDED, S.REQUIRES_MANUAL_REVIEW}),
    S.REQUIRES_MANUAL_REVIEW: frozenset({S.COMPLETED, S.FAILED, S.REFUNDED}),
    # Only a refund of the payment itself moves a settled payment (see the module docstring).
    S.COMPLETED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.REFUNDED}),
    S.FAILED: frozenset(),
    S.REFUNDED: frozenset(),
    S.CANCELLED: frozenset(),
}

# A final or settled payment can only be resolved as what it already is (invariant 6).
AGREEING_RESOLUTION: dict[PaymentStatus, Resolution] = {
    S.COMPLETED: Resolution.COMPLETED,
    S.PARTIALLY_REFUNDED: Resolution.COMPLETED,
    S.FAILED: Resolution.FAILED,
    S.CANCELLED: Resolution.FAILED,
    S.REFUNDED: Resolution.REFUNDED,
}

# A deposit's compensation refund is tried this many times (each with its own provider key)
# before an operator must look.
MAX_COMPENSATION_ATTEMPTS = 3
# The recovery worker's attempts (on its ladder: 30 minutes, 1 hour, 1 day by default) at a
# refunding deposit whose refund stays unsettled, before an operator must look.
MAX_RECOVERY_ATTEMPTS = 3


class ProviderAnswer(StrEnum):
    """What the gateway answered a saga step that asks the provider (charge, payout, refund)."""

    ACCEPTED = "accepted"  # the provider has it; its outcome comes as an event
    DECLINED = "declined"  # refused outright: no money moved
    UNKNOWN = "unknown"  # no answer (timeout): money may have moved; ask again, never fail


class RecoveryAction(StrEnum):
    """What moving a stuck payment on means for it now (`Payment.recovery_action`)."""

    # Ask the provider again about an operation whose outcome it has not given.
    SYNC = "sync_requested"
    # Run the saga's next step again from its recovery point, with the same keys.
    RESUME = "resume_requested"


class RecoveryOutcome(StrEnum):
    """What an attempt to move a stuck payment on achieved."""

    SETTLED = "settled"  # the provider gave its final answer; its event moves the payment
    UNKNOWN = "unknown"  # no final answer yet: ask again later
    RESUMED = "resumed"  # the saga's next step ran again
    ESCALATED = "escalated"  # still unsettled after the last attempt: requires_manual_review
    NOT_STUCK = "not_stuck"  # nothing to do: it is no longer initiated, pending or refunding


@dataclass(frozen=True, slots=True)
class RecoveryRequest:
    """The recovery worker asking to move a stuck payment on; `attempt_id` names the attempt
    (the same id again is the same attempt, recorded once)."""

    payment_id: str
    attempt_id: str
    requested_by: str
    rung: int = 0
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What an attempt did: its outcome, the operation asked about and the provider's answer
    (as the gateway reports it), and why it could not act, if it could not."""

    outcome: RecoveryOutcome
    operation_id: str = ""
    answer: str = ""
    error: str = ""


class HoldState(StrEnum):
    NONE = ""
    PLACED = "placed"
    CAPTURED = "captured"
    RELEASED = "released"


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_TRANSITION"

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


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """A saga step that asks the provider: which call, with what key, for how much."""

    operation: str  # "charge", "payout" or "refund"
    idempotency_key: str
    amount: Money
    payment_method: str = ""  # charge
    destination: str = ""  # payout
    charge_operation_id: str = ""  # refund: the gateway operation that took the money


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


@dataclass(frozen=True, slots=True)
class PaymentStep:
    """One entry of a payment's audit trail: every step of its saga and every transition,
    in order (`step`), with what it concerned (`data`) and, for a failure, why (`error`).

    Deposit, success:  status.initiated, charge.requested, charge.accepted, status.pending,
                       provider.charge_succeeded, credit.completed, status.completed
    Deposit, the credit impossible after the charge: ... provider.charge_succeeded,
                       credit.failed, compensation.started, status.refunding,
                       refund.requested, refund.accepted, provider.refund_succeeded,
                       status.refunded (or refund.failed three times, status.requires_manual_review)
    Withdrawal, success: status.initiated, hold.placed, payout.requested, payout.accepted,
                       status.pending, provider.payout_succeeded, hold.captured,
                       status.completed
    Withdrawal, payout failed: ... provider.payout_failed, hold.released, status.failed
    Refund (its own payment): as a withdrawal with refund.* steps; its deposit records
                       refund.reserved, then refund.settled or refund.released
    A provider call not answered (timeout): <call>.outcome_unknown (noted once; the payment
                       keeps the gateway operation and stays initiated, never failed)
    The recovery worker moving it on: recovery.sync_requested (the provider asked again) or
                       recovery.resume_requested (the next step run again), with the attempt,
                       rung, outcome, provider answer and next attempt; saga.resumed for the
                       payment service's own resume sweep
    A provider contradicting a final state: review.requested (a review case is opened)
    An operator's decision on a review case: review.resolved (then, for a payment in
                       requires_manual_review, status.<resolution>)
    """

    step: int
    event_type: str
    occurred_at: datetime
    data: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


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
    # A refund's deposit.
    parent_payment_id: str = ""
    saga: SagaState = field(default_factory=SagaState)
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Steps of the audit trail so far (stored); those recorded since loading.
    steps: int = 0
    new_changes: list[StatusChange] = field(default_factory=list, repr=False)
    new_steps: list[PaymentStep] = field(default_factory=list, repr=False)
    # Reasons for an operator to look, recorded since loading: the repository opens a review
    # case with them (or adds them to the payment's open case) in the same transaction.
    new_reviews: list[ReviewOpening] = field(default_factory=list, repr=False)
    _events: list[PaymentEvent] = field(default_factory=list, repr=False)

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def _new(
        cls, kind: PaymentKind, amount: Money, key: str, payment_id: str, **fields: object
    ) -> Payment:
        payment = cls(
            payment_id=payment_id or new_id(),
            kind=kind,
            status=PaymentStatus.INITIATED,
            amount=amount,
            idempotency_key=key,
            **fields,  # type: ignore[arg-type]
        )
        payment._record(None, PaymentStatus.INITIATED, "")
        return payment

    @classmethod
    def deposit(cls, request: DepositRequest, payment_id: str = "") -> Payment:
        return cls._new(
            PaymentKind.DEPOSIT,
            request.amount,
            request.idempotency_key,
            payment_id,
            destination_account_id=request.account_id,
            payment_method=request.payment_method,
        )

    @classmethod
    def withdrawal(cls, request: WithdrawalRequest, payment_id: str = "") -> Payment:
        return cls._new(
            PaymentKind.WITHDRAWAL,
            request.amount,
            request.idempotency_key,
            payment_id,
            source_account_id=request.account_id,
            saga=SagaState(destination=request.destination),
        )

    @classmethod
    def transfer(cls, request: TransferRequest, payment_id: str = "") -> Payment:
        return cls._new(
            PaymentKind.TRANSFER,
            request.amount,
            request.idempotency_key,
            payment_id,
            source_account_id=request.source_account_id,
            destination_account_id=request.destination_account_id,
        )

    def refund(self, request: RefundRequest, payment_id: str = "") -> Payment:
        """A refund of this deposit, as its own payment. Reserves its amount on this deposit
        at once (under the deposit's lock), so concurrent refunds can never add up to more
        than the deposit captured."""
        if self.kind is not PaymentKind.DEPOSIT or self.status not in SETTLED:
            raise PaymentNotRefundable(
                f"payment {self.payment_id} is a {self.status} {self.kind}; only a completed"
                " deposit can be refunded"
            )
        left = self.refundable_minor
        amount = request.amount or Money(left, self.amount.currency)
        if amount.currency != self.amount.currency:
            raise PaymentNotRefundable(
                f"payment {self.payment_id} was made in {self.amount.currency}, not"
                f" {amount.currency}"
            )
        if amount.amount_minor <= 0 or amount.amount_minor > left:
            raise RefundExceedsCaptured(
                f"payment {self.payment_id} has {Money(left, self.amount.currency)} left to"
                f" refund, not {amount}"
            )
        refund = Payment._new(
            PaymentKind.REFUND,
            amount,
            request.idempotency_key,
            payment_id,
            source_account_id=self.destination_account_id,
            parent_payment_id=self.payment_id,
            saga=SagaState(charge_operation_id=self.gateway_operation_id),
        )
        self.saga.refund_reserved_minor += amount.amount_minor
        self._note("refund.reserved", {"refund_id": refund.payment_id, "amount": str(amount)})
        return refund

    @property
    def refundable_minor(self) -> int:
        return self.amount.amount_minor - self.saga.refunded_minor - self.saga.refund_reserved_minor

    def as_of(self, change: StatusChange) -> Payment:
        """This payment as it stood right after `change` (one of its own, from its history):
        what a watcher is shown for each state it passed through, and what a replayed
        idempotency key answers."""
        latest = change.sequence == self.version
        return replace(
            self,
            status=change.to_status,
            version=change.sequence,
            updated_at=change.occurred_at,
            failure_reason=self.failure_reason if latest else "",
            new_changes=[],
            new_steps=[],
            new_reviews=[],
            _events=[],
        )

    def can_move_to(self, target: PaymentStatus) -> bool:
        return target in ALLOWED[self.status]

    # -- holds (withdrawals and refunds reserve their money before the provider is asked) ---

    def needs_hold(self) -> bool:
        return (
            self.kind in (PaymentKind.WITHDRAWAL, PaymentKind.REFUND)
            and self.status is PaymentStatus.INITIATED
            and self.saga.hold is HoldState.NONE
        )

    def record_hold(self, hold_id: str) -> None:
        """The wallet holds the money: the provider may now be asked (`payment.funds_held`).
        A payment that ended (cancelled, or failed by a concurrent attempt) while its hold was
        being placed keeps the hold too, so that it is released (`needs_hold_release`)."""
        ended = self.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED)
        if ended and self.saga.hold is HoldState.NONE:
            # Noted, so that the hold is stored (a save without a step writes nothing).
            self.saga.hold_id, self.saga.hold = hold_id, HoldState.PLACED
            self._note("hold.placed", {"hold_id": hold_id, "after": self.status.value})
        if not self.needs_hold():
            return
        self.saga.hold_id, self.saga.hold = hold_id, HoldState.PLACED
        self._note("hold.placed", {"hold_id": hold_id, "operation_ref": self.step_ref("hold")})
        self._emit_step("funds_held")

    def reject(self, reason: str, message: str) -> None:
        """The wallet refused what the request path asked (no funds, account frozen, no FX
        rate, ...): nothing moved and nothing will."""
        if self.status is not PaymentStatus.INITIATED:
            return
        self._note(f"{self._first_step}.refused", error=message)
        self.fail(reason.lower())

    @property
    def _first_step(self) -> str:
        return "transfer" if self.kind is PaymentKind.TRANSFER else "hold"

    def needs_hold_release(self) -> bool:
        return self.saga.hold is HoldState.PLACED and self.status in (
            PaymentStatus.FAILED,
            PaymentStatus.CANCELLED,
        )

    def record_hold_released(self) -> None:
        if self.saga.hold is HoldState.PLACED:
            self.saga.hold = HoldState.RELEASED
            self._note("hold.released", {"operation_ref": self.step_ref("release")})

    def step_ref(self, step: str) -> str:
        """The key of one of this payment's downstream calls: derived from the payment and
        the step, so a retried or resumed step can never apply twice."""
        return f"{self.payment_id}:{step}"

    # -- transfers ------------------------------------------------------------------------

    def complete_transfer(self, transaction_id: str) -> None:
        if self.kind is PaymentKind.TRANSFER and self.status is PaymentStatus.INITIATED:
            self._note("transfer.completed", {"transaction_id": transaction_id})
            self.complete()

    # -- asking the provider ----------------------------------------------------------------

    def begin_provider_call(self) -> ProviderCall | None:
        """The recovery point before the provider is asked: once recorded, the payment can
        no longer be cancelled. None when there is nothing to ask (cancelled, already past
        it, or a withdrawal without its hold)."""
        if self.status is not PaymentStatus.INITIATED or self.kind is PaymentKind.TRANSFER:
            return None
        if self.kind is not PaymentKind.DEPOSIT and self.saga.hold is not HoldState.PLACED:
            return None
        call = self.provider_call()
        if not self.saga.provider_call:
            self.saga.provider_call = call.operation
            self._note(f"{call.operation}.requested", {"idempotency_key": call.idempotency_key})
        return call

    def provider_call(self) -> ProviderCall:
        if self.kind is PaymentKind.DEPOSIT:
            return ProviderCall("charge", self.step_ref("charge"), self.amount, self.payment_method)
        if self.kind is PaymentKind.WITHDRAWAL:
            return ProviderCall(
                "payout", self.step_ref("payout"), self.amount, destination=self.saga.destination
            )
        return ProviderCall(
            "refund",
            self.step_ref("refund"),
            self.amount,
            charge_operation_id=self.saga.charge_operation_id,
        )

    def record_provider_answer(
        self,
        answer: ProviderAnswer,
        *,
        operation_id: str,
        reason: str,
        requested_at: datetime | None = None,
    ) -> None:
        """The gateway's answer to the step that asked the provider. Only an INITIATED
        payment learns from it: later, the provider's own events (which may have overtaken
        the answer) decide. A declined withdrawal or refund must have released its hold."""
        if self.status is not PaymentStatus.INITIATED:
            return
        operation = self.saga.provider_call or self.provider_call().operation
        if answer is ProviderAnswer.UNKNOWN:
            self._outcome_unknown(operation, operation_id)
            return
        if not self.saga.provider_call:  # a deposit charged before recovery points existed
            self.saga.provider_call = operation
            self._note(
                f"{operation}.requested",
                {"idempotency_key": self.provider_call().idempotency_key},
                at=requested_at,
            )
        if answer is ProviderAnswer.DECLINED:
            self._note(f"{operation}.declined", {"operation_id": operation_id}, error=reason)
            self.record_hold_released()
            self.fail(reason or f"{operation}_failed")
        else:
            self._note(f"{operation}.accepted", {"operation_id": operation_id})
            self.mark_pending(operation_id)

    def _outcome_unknown(self, operation: str, operation_id: str) -> None:
        """The provider did not answer: it may have acted. The payment stays initiated (the
        step is retried with the same key) and keeps the gateway's operation, so the recovery
        worker can ask the provider about it; noted once, however often retried."""
        if not operation_id or operation_id == self.gateway_operation_id:
            return
        self.gateway_operation_id = operation_id
        self._note(f"{operation}.outcome_unknown", {"operation_id": operation_id})

    # -- what the provider says; the aggregate decides what it means ------------------------

    def wants_credit_for_charge(self) -> bool:
        """Whether money the provider reports taken should now be credited to the wallet."""
        return self.kind is PaymentKind.DEPOSIT and self.status in (
            PaymentStatus.INITIATED,
            PaymentStatus.PENDING,
        )

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
            self._note("credit.completed", {"operation_ref": self.step_ref("credit")})
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
        elif self.status in SETTLED or self.status is PaymentStatus.REFUNDING:
            self._request_review("charge.failed", f"provider declined a {self.status} payment")

    def wants_capture(self) -> bool:
        """Whether a provider success should now take the held money for good."""
        return (
            self.kind in (PaymentKind.WITHDRAWAL, PaymentKind.REFUND)
            and self.status in (PaymentStatus.INITIATED, PaymentStatus.PENDING)
            and self.saga.hold is HoldState.PLACED
        )

    def wants_release(self) -> bool:
        """Whether a provider failure should now give the held money back."""
        return self.wants_capture()

    def apply_provider_succeeded(
        self, operation: str, *, operation_id: str, provider: str, captured: bool
    ) -> None:
        """A payout or refund went through. The held money was taken (captured): completed.
        A provider success on a payment that failed or was cancelled contradicts us: review."""
        if self.status is PaymentStatus.INITIATED and self.saga.provider_call:
            self.mark_pending(operation_id)
        if self.status is PaymentStatus.PENDING and captured:
            self.saga.provider = provider or self.saga.provider
            self._note(f"provider.{operation}_succeeded", {"operation_id": operation_id})
            self.saga.hold = HoldState.CAPTURED
            self._note("hold.captured", {"operation_ref": self.step_ref("capture")})
            self.complete()
        elif self.status in FINAL or self.status is PaymentStatus.REQUIRES_MANUAL_REVIEW:
            self._request_review(
                f"{operation}.succeeded",
                f"provider reports the {operation} of a {self.status} payment succeeded",
            )

    def apply_provider_failed(
        self, operation: str, *, operation_id: str, reason: str, released: bool
    ) -> None:
        """A payout or refund was declined by the provider: the hold was released, nothing
        moved: failed. A completed one declined afterwards: review."""
        if self.status is PaymentStatus.INITIATED and self.saga.provider_call:
            self.mark_pending(operation_id)
        if self.status is PaymentStatus.PENDING and released:
            self._note(f"provider.{operation}_failed", {"operation_id": operation_id}, error=reason)
            self.record_hold_released()
            self.fail(reason or f"{operation}_failed")
        elif self.status in SETTLED:
            self._request_review(
                f"{operation}.failed", f"provider declined the {operation} of a completed payment"
            )

    def capture_refused(self, operation: str, reason: str) -> None:
        """The provider paid out but the hold could not be captured (it expired, or the
        account was tampered with): money left without its debit. An operator must look."""
        if self.status in (PaymentStatus.INITIATED, PaymentStatus.PENDING):
            self._note("hold.capture_failed", error=reason)
            self._escalate(
                ReviewReason.CAPTURE_FAILED, f"{operation} succeeded, capture failed: {reason}"
            )

    # -- a deposit's refunds ----------------------------------------------------------------

    def settle_refund(self, refund: Payment) -> None:
        """One of this deposit's refunds ended: completed moves the deposit on (partially
        refunded, or refunded once all of it went back); failed or cancelled frees its
        reservation for another refund."""
        amount = refund.amount.amount_minor
        if refund.status is PaymentStatus.COMPLETED:
            self.saga.refund_reserved_minor -= amount
            self.saga.refunded_minor += amount
            self._note(
                "refund.settled", {"refund_id": refund.payment_id, "amount": str(refund.amount)}
            )
            target = (
                PaymentStatus.REFUNDED
                if self.saga.refunded_minor >= self.amount.amount_minor
                else PaymentStatus.PARTIALLY_REFUNDED
            )
            if target is not self.status:
                self._move(target, "")
        elif refund.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED):
            self.saga.refund_reserved_minor -= amount
            self._note(
                "refund.released", {"refund_id": refund.payment_id, "amount": str(refund.amount)}
            )

    # -- a deposit's compensation (the provider took money the wallet cannot take in) -------

    def compensation_call(self) -> ProviderCall | None:
        """The next refund attempt of a refunding deposit, its recovery point recorded."""
        if self.kind is not PaymentKind.DEPOSIT or self.status is not PaymentStatus.REFUNDING:
            return None
        attempt = self.saga.compensation_attempts + 1
        key = self.step_ref("refund") + ("" if attempt == 1 else f":{attempt}")
        if self.saga.provider_call != key:
            self.saga.provider_call = key
            self._note("refund.requested", {"idempotency_key": key, "attempt": str(attempt)})
        return ProviderCall(
            "refund", key, self.amount, charge_operation_id=self.gateway_operation_id
        )

    def record_compensation_answer(
        self, answer: ProviderAnswer, *, operation_id: str, reason: str
    ) -> None:
        """The gateway's answer to a refund attempt. Accepted or unknown, the attempt's
        operation is kept (the recovery worker asks the provider about it) and noted once,
        however often the attempt is resumed; declined, it counts as a failed attempt."""
        if self.status is not PaymentStatus.REFUNDING:
            return
        if answer is not ProviderAnswer.DECLINED:
            seen = (self.saga.refund_operation_id, self.saga.refund_outcome)
            if not operation_id or seen == (operation_id, answer.value):
                return
            self.saga.refund_operation_id, self.saga.refund_outcome = operation_id, answer.value
            event = (
                "refund.accepted" if answer is ProviderAnswer.ACCEPTED else "refund.outcome_unknown"
            )
            self._note(event, {"operation_id": operation_id})
        else:
            self.apply_compensation_outcome(
                succeeded=False, operation_id=operation_id, reason=reason
            )

    def apply_compensation_outcome(
        self, *, succeeded: bool, operation_id: str, reason: str
    ) -> None:
        """The compensation refund went through (refunded), or failed: tried again with a
        new key, until MAX_COMPENSATION_ATTEMPTS have failed (requires_manual_review)."""
        if self.status is not PaymentStatus.REFUNDING:
            if succeeded and self.status is not PaymentStatus.REFUNDED:
                self._request_review(
                    "refund.succeeded", f"provider refunded a {self.status} payment"
                )
            return
        if succeeded:
            self._note("provider.refund_succeeded", {"operation_id": operation_id})
            self._move(PaymentStatus.REFUNDED, "")
            return
        if operation_id and operation_id == self.saga.last_failed_operation:
            return  # the gateway's answer and its event both report the same failed attempt
        self.saga.last_failed_operation = operation_id
        self.saga.refund_operation_id = self.saga.refund_outcome = ""
        self.saga.compensation_attempts += 1
        self._note(
            "refund.failed",
            {"operation_id": operation_id, "attempt": str(self.saga.compensation_attempts)},
            error=reason,
        )
        if self.saga.compensation_attempts >= MAX_COMPENSATION_ATTEMPTS:
            self._escalate(
                ReviewReason.COMPENSATION_FAILED,
                f"compensation refund failed {self.saga.compensation_attempts} times: {reason}",
            )
        else:
            self._emit_step("compensation_retry")

    # -- cancelling -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stops a payment the provider has not been asked about. Its hold (if any) is
        released afterwards from the durable `payment.cancelled` event."""
        if (
            self.status is not PaymentStatus.INITIATED
            or self.saga.provider_call
            or (self.kind is PaymentKind.TRANSFER)
        ):
            raise PaymentNotCancellable(
                f"payment {self.payment_id} is {self.status}"
                + (" and the provider was already asked" if self.saga.provider_call else "")
                + "; only a payment not yet sent to the provider can be cancelled"
            )
        self._note("cancel.requested")
        self._move(PaymentStatus.CANCELLED, "cancelled by the caller")

    # -- the saga resumed after a stop ----------------------------------------------------------

    def note_resumed(self, at: datetime | None = None) -> None:
        """The resume sweep picked this payment up; it looks again only after its threshold
        has passed once more. `updated_at` stays: the payment did not change, and the
        recovery worker measures how long it has been stuck from it."""
        at = at or datetime.now(UTC)
        self.saga.resumed_at = at.isoformat()
        self._note("saga.resumed", {"status": self.status.value}, at=at)

    # -- the recovery worker moving a stuck payment on --------------------------------------

    def recovery_action(self) -> tuple[RecoveryAction, str] | None:
        """What moving this payment on means now, and the gateway operation to ask about:
        a pending payment, or one whose provider call (or refund attempt) was sent and not
        settled, is asked about (never failed on a guess: only the provider's final answer
        moves it, through its events); a saga stopped before its next call runs that step
        again. None when it is no longer stuck."""
        if self.status is PaymentStatus.PENDING:
            return (
                (RecoveryAction.SYNC, self.gateway_operation_id)
                if self.gateway_operation_id
                else None
            )
        if self.status is PaymentStatus.INITIATED:
            if self.saga.provider_call and self.gateway_operation_id:
                return RecoveryAction.SYNC, self.gateway_operation_id
            return RecoveryAction.RESUME, ""
        if self.status is PaymentStatus.REFUNDING:
            if self.saga.refund_operation_id:
                return RecoveryAction.SYNC, self.saga.refund_operation_id
            return RecoveryAction.RESUME, ""
        return None

    def record_recovery(
        self, request: RecoveryRequest, action: RecoveryAction, result: RecoveryResult
    ) -> PaymentStep:
        """Notes an attempt of the recovery worker in the audit trail (`recovery.<action>`,
        returned; its `outcome` is what the attempt achieved) and decides what it means: a
        refunding deposit left unsettled by the MAX_RECOVERY_ATTEMPTS-th attempt goes to an
        operator (a refund whose outcome may be unknown is never failed, nor tried forever
        in silence)."""
        outcome = result.outcome
        refunding = self.status is PaymentStatus.REFUNDING
        if refunding and outcome in (RecoveryOutcome.UNKNOWN, RecoveryOutcome.RESUMED):
            self.saga.recovery_attempts += 1
            if self.saga.recovery_attempts >= MAX_RECOVERY_ATTEMPTS:
                outcome = RecoveryOutcome.ESCALATED
        data = {
            "attempt_id": request.attempt_id,
            "requested_by": request.requested_by,
            "rung": str(request.rung),
            "outcome": outcome.value,
        }
        if result.operation_id:
            data["operation_id"] = result.operation_id
        if result.answer:
            data["answer"] = result.answer
        if request.next_attempt_at is not None and outcome is not RecoveryOutcome.ESCALATED:
            data["next_attempt_at"] = request.next_attempt_at.isoformat()
        self._note(f"recovery.{action}", data, error=result.error)
        noted = self.new_steps[-1]
        if outcome is RecoveryOutcome.ESCALATED:
            self._escalate(
                ReviewReason.REFUND_STALLED,
                f"refund still unsettled after {self.saga.recovery_attempts} recovery attempts",
            )
        return noted

    def settles_refund(self) -> bool:
        """Whether this refund has just ended, so its deposit must learn of it."""
        return self.kind is PaymentKind.REFUND and any(
            change.to_status
            in (PaymentStatus.COMPLETED, PaymentStatus.FAILED, PaymentStatus.CANCELLED)
            for change in self.new_changes
        )

    # -- manual review ----------------------------------------------------------------------

    def review_credit_needed(self, resolution: Resolution) -> bool:
        """Whether resolving this payment as `resolution` must first credit the wallet: a
        deposit reaches requires_manual_review only after its credit failed and then its
        compensation refund failed, so a deposit resolved as completed was never credited."""
        return (
            self.kind is PaymentKind.DEPOSIT
            and self.status is PaymentStatus.REQUIRES_MANUAL_REVIEW
            and resolution is Resolution.COMPLETED
        )

    def resolve_review(self, case_id: str, decision: Decision, *, credited: bool = False) -> None:
        """An operator's decision on this payment's review case.

        - In requires_manual_review: the payment moves to the resolution through the state
          machine (a `review.resolved` step, then the normal `payment.<status>` event). A
          deposit resolved as completed was credited just before (`credited`, key
          `<payment_id>:review-credit`); resolved as refunded, its whole amount counts as
          refunded; as failed, the note becomes its failure reason.
        - Final or settled (a provider contradicted it): only the decision is recorded, and
          only one that agrees with the status (completed for completed or partially
          refunded, failed for failed or cancelled, refunded for refunded); any other would
          move a final state: REVIEW_RESOLUTION_CONTRADICTS_PAYMENT.
        - Anything else (its saga still runs): REVIEW_PAYMENT_IN_FLIGHT.
        """
        if self.status is not PaymentStatus.REQUIRES_MANUAL_REVIEW:
            self._check_agrees(decision.resolution)
        data = {
            "case_id": case_id,
            "resolution": decision.resolution.value,
            "resolved_by": decision.resolved_by,
            "note": decision.note,
        }
        self._note("review.resolved", data, at=decision.resolved_at)
        if self.status is not PaymentStatus.REQUIRES_MANUAL_REVIEW:
            return
        if credited:
            self._note("credit.completed", {"operation_ref": self.step_ref("review-credit")})
        why = f"resolved by {decision.resolved_by}: {decision.note}"
        if decision.resolution is Resolution.FAILED:
            self.fail(why)
            return
        if decision.resolution is Resolution.REFUNDED and self.kind is PaymentKind.DEPOSIT:
            self.saga.refunded_minor = self.amount.amount_minor
        self._move(PaymentStatus(decision.resolution.value), why)

    def _check_agrees(self, resolution: Resolution) -> None:
        agreeing = AGREEING_RESOLUTION.get(self.status)
        if agreeing is None:
            raise ReviewPaymentInFlight(
                f"payment {self.payment_id} is {self.status}: its saga is still running;"
                " resolve the case once it has settled"
            )
        if resolution is not agreeing:
            raise ResolutionContradictsPayment(
                f"payment {self.payment_id} is {self.status} and stays so: it can only be"
                f" resolved as {agreeing}, not {resolution}"
            )

    def _escalate(self, code: ReviewReason, reason: str) -> None:
        """The saga cannot decide: requires_manual_review, and a case for an operator."""
        self._move(PaymentStatus.REQUIRES_MANUAL_REVIEW, reason)
        self._open_review(code, reason, f"status.{PaymentStatus.REQUIRES_MANUAL_REVIEW}")

    def _open_review(self, code: ReviewReason, reason: str, source: str) -> None:
        opened = ReviewOpening(self.payment_id, code, reason, source, datetime.now(UTC))
        self.new_reviews.append(opened)

    def request_reconciliation_review(
        self, reason: str, details: Mapping[str, str], *, key: str
    ) -> None:
        """The ledger or the provider disagrees with this payment (the recovery worker's
        reconciliation): a case for an operator, the payment's state left as it is."""
        source = "reconciliation"
        self._note("review.requested", {"source": source, "mismatch": key}, error=reason)
        self.new_reviews.append(
            ReviewOpening(
                self.payment_id,
                ReviewReason.RECONCILIATION_MISMATCH,
                reason,
                source,
                datetime.now(UTC),
                details=dict(details),
                key=key,
            )
        )
        self._events.append(
            events.ReviewRequested(
                payment_id=self.payment_id,
                status=self.status.value,
                provider_event=source,
                reason=reason,
                gateway_operation_id=self.gateway_operation_id,
                version=self.version,
            )
        )

    def note_provider_dispute(self, provider_event: str, reason: str) -> None:
        """The gateway found the provider contradicting an operation of this payment that had
        already ended (it failed one the provider never processed, and the provider now
        reports it succeeded, say), or reporting it for another amount: money may have moved
        otherwise than this payment says. The state stays; an operator looks."""
        self._request_review(provider_event, reason)

    def _request_review(self, provider_event: str, reason: str) -> None:
        self._note("review.requested", {"provider_event": provider_event}, error=reason)
        self._open_review(ReviewReason.PROVIDER_CONTRADICTION, reason, provider_event)
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
                parent_payment_id=self.parent_payment_id,
            )
        )

    def _emit_step(self, step: str) -> None:
        """A saga step other services or the saga's own next step react to
        (`payment.<step>`), written to the outbox with the change that caused it."""
        self._events.append(
            events.PaymentStepRecorded(
                payment_id=self.payment_id, kind=self.kind.value, step=step, version=self.version
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
        return bool(self.new_changes or self.new_steps or self.new_reviews)

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
