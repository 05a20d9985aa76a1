"""What every part of the payment aggregate stands on: its fields, its moves through the state
machine, the audit trail each step writes, the events it publishes and the review cases it
asks for. The decisions of each flow are written beside it, one module a flow, as subclasses of
`PaymentLifecycle` that `model.Payment` combines; they change status, note steps, publish and
ask for review only through the helpers here (`_move`, `_note`, `_emit_step`, `_escalate`,
`_request_review`), so every move is checked against the table and recorded the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Self

from common.ids import new_id
from common.money import Money
from payment_service.domain import events
from payment_service.domain.events import PaymentEvent
from payment_service.domain.review import ReviewOpening, ReviewReason
from payment_service.domain.saga import SagaState
from payment_service.domain.status import ALLOWED, InvalidTransition, PaymentKind, PaymentStatus
from payment_service.domain.trail import PaymentStep, StatusChange


def step_ref(payment_id: str, step: str) -> str:
    """The key of one of a payment's downstream calls: derived from the payment and the step,
    so a retried or resumed step can never apply twice."""
    return f"{payment_id}:{step}"


@dataclass
class PaymentLifecycle:
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

    @classmethod
    def _new(
        cls, kind: PaymentKind, amount: Money, key: str, payment_id: str, **fields: object
    ) -> Self:
        payment = cls(
            payment_id=payment_id or new_id(),
            kind=kind,
            status=PaymentStatus.INITIATED,
            amount=amount,
            idempotency_key=key,
            **fields,  # type: ignore[arg-type]  # the factories pass only this class's own fields
        )
        payment._record(None, PaymentStatus.INITIATED, "")
        return payment

    def as_of(self, change: StatusChange) -> Self:
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

    def step_ref(self, step: str) -> str:
        return step_ref(self.payment_id, step)

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
                provider_call=self.saga.provider_call,
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

    def _escalate(self, code: ReviewReason, reason: str) -> None:
        """The saga cannot decide: requires_manual_review, and a case for an operator."""
        self._move(PaymentStatus.REQUIRES_MANUAL_REVIEW, reason)
        self._open_review(code, reason, f"status.{PaymentStatus.REQUIRES_MANUAL_REVIEW}")

    def _open_review(self, code: ReviewReason, reason: str, source: str) -> None:
        opened = ReviewOpening(self.payment_id, code, reason, source, datetime.now(UTC))
        self.new_reviews.append(opened)

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

    @property
    def has_changes(self) -> bool:
        return bool(self.new_changes or self.new_steps or self.new_reviews)

    def pull_events(self) -> list[PaymentEvent]:
        pulled, self._events = self._events, []
        return pulled
