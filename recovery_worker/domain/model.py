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


class SyncAnswer(StrEnum):
    """What asking the provider again achieved."""

    # The provider confirmed an outcome; the gateway applied it and emitted its event.
    SETTLED = "settled"
    # Still in flight, or the provider did not answer: ask again at the next rung.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class GroupHealth:
    stream: str
    group: str
    lag: int
    pending: int
    # Pending entries delivered longer ago than the stall threshold (counted up to a cap).
    stalled: int

    @property
    def is_stalled(self) -> bool:
        return self.stalled > 0


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
    # Calls made to move them on (SyncOperation, ExpireHolds releases).
    acted: int = 0
    # Found but left alone this round (ladder rung not due, nothing to call, unknown answer).
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
