"""Provider operations and their state machine. Plain Python: no SQL, no gRPC, no HTTP.

    CREATED ──> PENDING ──> SUCCEEDED
       │           └──────> FAILED
       └──> SUCCEEDED | FAILED

CREATED means "recorded, the provider's answer unknown": the request may never have left, or
the provider may have taken it and we timed out (then `outcome_unknown` is set, and the
operation is bound to its provider for good). Only the provider can settle that, so nothing
here ever fails an operation on our own say-so. While no provider can have acted, a CREATED
operation may be routed to another provider (failover). A provider event can overtake our own record
of the provider's answer, which is why CREATED may go straight to an outcome. Terminal states
are final: a later contradicting provider event is recorded as a conflict, never applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from common.errors import FailedPrecondition
from common.ids import new_id
from common.money import Money
from gateway_service.domain import events


class OperationKind(StrEnum):
    CHARGE = "charge"
    PAYOUT = "payout"
    REFUND = "refund"


class OperationStatus(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


class ProviderEventStatus(StrEnum):
    """What became of one provider event; stored beside it for audit and manual review."""

    APPLIED = "applied"
    DUPLICATE_OUTCOME = "duplicate_outcome"
    CONFLICT = "conflict"
    UNMATCHED = "unmatched"
    IGNORED = "ignored"
    # Verified, but disagrees with the operation it names (amount, currency, reference).
    MISMATCH = "mismatch"
    # An earlier stage than the operation has reached (a reordered "pending"): changes nothing.
    STALE = "stale"

    @property
    def changes_operation(self) -> bool:
        """Whether the operation has something to save: a new state, or a fact for review."""
        return self in (
            ProviderEventStatus.APPLIED,
            ProviderEventStatus.CONFLICT,
            ProviderEventStatus.MISMATCH,
        )


_NEXT: dict[OperationStatus, frozenset[OperationStatus]] = {
    OperationStatus.CREATED: frozenset(
        {OperationStatus.PENDING, OperationStatus.SUCCEEDED, OperationStatus.FAILED}
    ),
    OperationStatus.PENDING: frozenset({OperationStatus.SUCCEEDED, OperationStatus.FAILED}),
    OperationStatus.SUCCEEDED: frozenset(),
    OperationStatus.FAILED: frozenset(),
}

# A FAILED operation always says why; providers that fail without a reason get this one.
UNSPECIFIED_FAILURE = "provider_failed"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    status: OperationStatus
    provider: str
    provider_reference: str
    failure_reason: str
    outcome_unknown: bool
    recorded_at: datetime | None


@dataclass
class Operation:
    operation_id: str
    kind: OperationKind
    status: OperationStatus
    amount: Money
    idempotency_key: str
    # The payment method token (charge), destination (payout) or the provider's id of the
    # refunded charge (refund): stored so a retry can re-ask the provider, never logged, never
    # put in an event. repr=False keeps it out of tracebacks and debug output.
    instrument: str = field(repr=False)
    reference: str
    provider: str
    provider_reference: str | None = None
    failure_reason: str | None = None
    version: int = 0
    outcome_unknown: bool = False
    # Stored: every provider asked so far answered that it did not act, and none has been
    # asked since. Only then may a later request for this operation go to another provider.
    failover_clear: bool = False
    parent_operation_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    history: list[HistoryEntry] = field(default_factory=list, repr=False)
    _events: list[events.GatewayEvent] = field(default_factory=list, repr=False)
    # Not stored: this object was opened by the request holding it, which has asked nobody
    # yet. A row read back never has it, since the request that opened it may have died, or
    # lost its deadline, with its provider call in flight.
    opened_here: bool = field(default=False, init=False, repr=False, compare=False)

    @classmethod
    def open(
        cls,
        *,
        kind: OperationKind,
        idempotency_key: str,
        amount: Money,
        instrument: str,
        reference: str,
        provider: str,
        parent_operation_id: str | None = None,
    ) -> Operation:
        """A new operation, CREATED. It emits nothing: only the provider's answer is news."""
        operation = cls(
            operation_id=new_id(),
            kind=kind,
            status=OperationStatus.CREATED,
            amount=amount,
            idempotency_key=idempotency_key,
            instrument=instrument,
            reference=reference,
            provider=provider,
            parent_operation_id=parent_operation_id,
            version=1,
        )
        operation.opened_here = True
        return operation

    @classmethod
    def charge(
        cls,
        *,
        idempotency_key: str,
        amount: Money,
        payment_method: str,
        reference: str,
        provider: str,
    ) -> Operation:
        return cls.open(
            kind=OperationKind.CHARGE,
            idempotency_key=idempotency_key,
            amount=amount,
            instrument=payment_method,
            reference=reference,
            provider=provider,
        )

    def same_request(
        self, *, kind: OperationKind, amount: Money, instrument: str, reference: str
    ) -> bool:
        return (
            self.kind is kind
            and self.amount == amount
            and self.instrument == instrument
            and self.reference == reference
        )

    @property
    def may_fail_over(self) -> bool:
        """True while no provider can have acted on this operation: it is new to the request
        holding it, or every provider asked answered that it did not act. A stored operation
        that is neither may have a request in flight to its provider (its asker died, or
        gave up at its deadline, before recording the answer): asking another provider then
        could move the money twice, so it stays with the one it has."""
        return self._unanswered and (self.opened_here or self.failover_clear)

    @property
    def _unanswered(self) -> bool:
        return self.status is OperationStatus.CREATED and not self.outcome_unknown

    def route_to(self, provider: str) -> bool:
        """Records that `provider` is about to be asked (the asker decided it may fail over);
        from here on a request in flight may exist. Refused once a provider may have acted,
        and a no-op for the provider already recorded unless it was cleared."""
        if not self._unanswered or (provider == self.provider and not self.failover_clear):
            return False
        self.provider = provider
        self.failover_clear = False
        self.version += 1
        return True

    def mark_unsent(self) -> bool:
        """Every provider asked answered that it did not act, and nobody is asking now: a
        later request may go to any provider."""
        if not self._unanswered or self.failover_clear:
            return False
        self.failover_clear = True
        self.version += 1
        return True

    def mark_unknown(self) -> bool:
        """The provider was asked and did not answer: it may have acted. Announced once."""
        if self.status is not OperationStatus.CREATED or self.outcome_unknown:
            return False
        self.outcome_unknown = True
        self.version += 1
        self._events.append(events.OperationOutcomeUnknown(**self._fact(self.status, "")))
        return True

    def mark_accepted(self, provider_reference: str) -> bool:
        """The provider took the request: PENDING, announced to nobody (see `_move`). False,
        changing nothing, when the operation has already moved on (a provider event overtook
        this answer): never go backwards."""
        if self.status is not OperationStatus.CREATED:
            return False
        self.provider_reference = provider_reference
        self._move(OperationStatus.PENDING)
        return True

    def mark_rejected(self, reason: str) -> bool:
        """The provider refused the request outright, so nothing happened: FAILED."""
        if self.status is not OperationStatus.CREATED:
            return False
        self._move(OperationStatus.FAILED, failure_reason=reason or UNSPECIFIED_FAILURE)
        return True

    def apply_provider_report(
        self,
        *,
        kind: OperationKind,
        status: OperationStatus,
        failure_reason: str,
        provider_event_id: str,
        provider_reference: str,
        amount: Money | None,
    ) -> ProviderEventStatus:
        """Applies what the provider says of this operation (a webhook or a status answer).

        A report that disagrees with the operation moves no money: it is a mismatch for
        review. An earlier stage than the operation has reached never moves it backwards.
        """
        if kind is not self.kind:
            return ProviderEventStatus.IGNORED
        mismatch = self._mismatch(amount, provider_reference)
        if mismatch:
            self._mismatched(mismatch, provider_event_id)
            return ProviderEventStatus.MISMATCH
        if status is OperationStatus.PENDING:
            return (
                ProviderEventStatus.APPLIED
                if self.mark_accepted(provider_reference)
                else ProviderEventStatus.STALE
            )
        return self.apply_provider_outcome(
            kind=kind,
            outcome=status,
            failure_reason=failure_reason,
            provider_event_id=provider_event_id,
            provider_reference=provider_reference,
        )

    def _mismatch(self, amount: Money | None, provider_reference: str) -> str:
        if amount is not None and amount != self.amount:
            return f"the provider reports {amount}, the operation is for {self.amount}"
        if provider_reference and self.provider_reference not in (None, provider_reference):
            return (
                f"the provider reports reference {provider_reference!r},"
                f" the operation has {self.provider_reference!r}"
            )
        return ""

    def _mismatched(self, description: str, provider_event_id: str) -> None:
        self.version += 1
        fact = self._fact(self.status, provider_event_id)
        fact["failure_reason"] = f"provider event {provider_event_id}: {description}"
        self._events.append(events.ProviderReportMismatched(**fact))

    def apply_provider_outcome(
        self,
        *,
        kind: OperationKind,
        outcome: OperationStatus,
        failure_reason: str,
        provider_event_id: str,
        provider_reference: str,
    ) -> ProviderEventStatus:
        """Applies a provider's final word on this operation, as far as it may be applied."""
        if not outcome.is_terminal:
            raise ValueError(f"a provider outcome is succeeded or failed, not {outcome}")
        if kind is not self.kind:
            return ProviderEventStatus.IGNORED
        if self.status.is_terminal:
            if self.status is outcome:
                return ProviderEventStatus.DUPLICATE_OUTCOME
            self._contradicted(outcome, failure_reason, provider_event_id)
            return ProviderEventStatus.CONFLICT
        if self.provider_reference is None and provider_reference:
            self.provider_reference = provider_reference
        reason = (
            (failure_reason or UNSPECIFIED_FAILURE) if outcome is OperationStatus.FAILED else ""
        )
        self._move(outcome, failure_reason=reason, causation_id=provider_event_id)
        return ProviderEventStatus.APPLIED

    def pull_events(self) -> list[events.GatewayEvent]:
        pulled, self._events = self._events, []
        return pulled

    def _move(
        self, status: OperationStatus, *, failure_reason: str = "", causation_id: str = ""
    ) -> None:
        if status not in _NEXT[self.status]:
            raise FailedPrecondition(
                f"operation {self.operation_id} cannot move from {self.status} to {status}"
            )
        self.status = status
        # The provider has answered now: whatever it was, the outcome is no longer unknown.
        self.outcome_unknown = False
        if failure_reason:
            self.failure_reason = failure_reason
        self.version += 1
        # Only an outcome is published. Nobody acts on `<kind>.pending` (the caller that asked
        # the provider records `pending` from our answer), and an event nobody acts on is not
        # published (design.md §5): it cost an outbox row, a relay XADD and a consumer read per
        # payment. The status history still records the move; consumers order and deduplicate
        # by version and event_id, so the version it skips on the stream is harmless.
        if status.is_terminal:
            self._events.append(events.OperationStatusChanged(**self._fact(status, causation_id)))

    def _contradicted(
        self, outcome: OperationStatus, failure_reason: str, provider_event_id: str
    ) -> None:
        # The state stays; the version still moves, because the conflict event is a fact of
        # its own and consumers order and deduplicate events by (aggregate_id, version).
        self.version += 1
        said = f"{outcome} ({failure_reason})" if failure_reason else str(outcome)
        fact = self._fact(outcome, provider_event_id)
        fact["failure_reason"] = (
            f"contradicting provider event {provider_event_id}: the provider reports {said}"
            f" but the operation is already {self.status}"
        )
        self._events.append(events.ContradictingOutcomeReceived(**fact))

    def _fact(self, status: OperationStatus, causation_id: str) -> dict[str, Any]:
        return {
            "operation_id": self.operation_id,
            "kind": self.kind.value,
            "status": status.value,
            "amount": self.amount,
            "reference": self.reference,
            "idempotency_key": self.idempotency_key,
            "provider": self.provider,
            "provider_reference": self.provider_reference or "",
            "failure_reason": self.failure_reason or "",
            "version": self.version,
            "causation_id": causation_id,
        }


# What each provider event type we understand says about which kind of operation.
PROVIDER_EVENT_OUTCOMES: dict[str, tuple[OperationKind, OperationStatus]] = {
    f"{kind.value}.{said}": (kind, status)
    for kind in OperationKind
    for said, status in (
        # Providers say "processing" (Stripe) or "pending"; to us both mean PENDING.
        ("processing", OperationStatus.PENDING),
        ("pending", OperationStatus.PENDING),
        ("succeeded", OperationStatus.SUCCEEDED),
        ("failed", OperationStatus.FAILED),
    )
}


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One callback from a provider, as received (its signature already verified)."""

    provider: str
    provider_event_id: str
    event_type: str
    provider_reference: str
    failure_reason: str
    occurred_at: datetime | None
    raw_payload: bytes = field(repr=False)
    # What the provider says about the operation, parsed by the webhook adapter.
    operation_id: str = ""
    amount: Money | None = None
    # The delivery's W3C trace context headers, opaque here: the events the callback causes
    # continue the trace of the flow it settles.
    trace_context: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)
