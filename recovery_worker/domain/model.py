"""What the sweeps look at and what they tell: views of other services' data, and reports.

The worker owns no business data, so these are read-only snapshots taken through the
services' APIs; the statuses are the payment service's names in lower case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class PaymentStatus(StrEnum):
    INITIATED = "initiated"
    PENDING = "pending"
    REFUNDING = "refunding"


@dataclass(frozen=True, slots=True)
class PaymentView:
    payment_id: str
    kind: str
    status: str
    created_at: datetime
    updated_at: datetime
    gateway_operation_id: str = ""


class RecoveryOutcome(StrEnum):
    """What an attempt to move a stuck payment on achieved (the payment service's answer)."""

    # The provider gave its final answer; its event moves the payment on.
    SETTLED = "settled"
    # No final answer yet: ask again at the next rung.
    UNKNOWN = "unknown"
    # The saga's next step ran again from its recovery point.
    RESUMED = "resumed"
    # Still unsettled after the payment's last attempt: it went to manual review.
    ESCALATED = "escalated"
    # It had moved on meanwhile: nothing was done.
    NOT_STUCK = "not_stuck"


@dataclass(frozen=True, slots=True)
class RecoveryAttempt:
    """One attempt at a stuck payment: at which rung of the ladder, named so that asking
    twice (a retry, or a twin) is the same attempt, and when the next one is due."""

    payment_id: str
    attempt_id: str
    rung: int
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    outcome: RecoveryOutcome
    # Why the attempt could not act, when it could not (e.g. an operation the gateway lost).
    error: str = ""


@dataclass(frozen=True, slots=True)
class GroupHealth:
    stream: str
    group: str
    lag: int
    pending: int
    # Pending entries delivered longer ago than the stall threshold (counted up to a cap).
    stalled: int
    # Whether the oldest entry not yet delivered to the group has waited past the threshold:
    # no consumer reads (a dead relay shows in the services' readiness, not here).
    undelivered_stalled: bool = False

    @property
    def is_stalled(self) -> bool:
        return self.stalled > 0 or self.undelivered_stalled


@dataclass(frozen=True, slots=True)
class StreamHealth:
    stream: str
    dead_letters: int
    groups: tuple[GroupHealth, ...] = ()


class SweepStatus(StrEnum):
    DONE = "done"
    # Another worker holds this sweep's lease: it is doing this round.
    BUSY = "busy"
    # The sweep runs less often than the round (reconciliation): not its turn yet.
    NOT_DUE = "not_due"
    # A service or Redis did not answer: the sweep is tried again next round.
    UNAVAILABLE = "unavailable"
    # The sweep raised something unexpected (a bug): logged with its traceback.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one run of one sweep found and did, for the log and `paysuite recover --once`."""

    sweep: str
    status: SweepStatus = SweepStatus.DONE
    # Things that matched the sweep (stuck payments, expired holds, stalled groups ...).
    found: int = 0
    # Calls made to move them on (RecoverPayment, ExpireHolds releases).
    acted: int = 0
    # Found but left alone this round (ladder rung not due, moved on meanwhile, refused).
    skipped: int = 0
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> dict[str, object]:
        return {
            "sweep": self.sweep,
            "status": self.status.value,
            "found": self.found,
            "acted": self.acted,
            "skipped": self.skipped,
        }
