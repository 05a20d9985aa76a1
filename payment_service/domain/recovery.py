"""Moving a stuck payment on: the payment service's own resume sweep, and the recovery worker
asking the provider again or running the saga's next step again (what it asks for, what an
attempt achieved, and what that means for the payment)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from payment_service.domain.lifecycle import PaymentLifecycle
from payment_service.domain.review import ReviewReason
from payment_service.domain.status import PaymentStatus
from payment_service.domain.trail import PaymentStep

# The recovery worker's attempts (on its ladder: 30 minutes, 1 hour, 1 day by default) at a
# refunding deposit whose refund stays unsettled, before an operator must look.
MAX_RECOVERY_ATTEMPTS = 3


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


class RecoverySteps(PaymentLifecycle):
    def note_resumed(self, at: datetime | None = None) -> None:
        """The resume sweep picked this payment up; it looks again only after its threshold
        has passed once more. `updated_at` stays: the payment did not change, and the
        recovery worker measures how long it has been stuck from it."""
        at = at or datetime.now(UTC)
        self.saga.resumed_at = at.isoformat()
        self._note("saga.resumed", {"status": self.status.value}, at=at)

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
