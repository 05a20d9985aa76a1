"""What the sweeps need from the outside world, as Protocols. The real ones are in
`recovery_worker.adapters` (gRPC clients, Redis); tests use the fakes beside them.

Every method raises `common.errors.DependencyUnavailable` when what it talks to does not
answer (translated once, in the adapter); the sweeps treat that as "try next round".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from recovery_worker.domain.model import (
    PaymentStatus,
    PaymentView,
    RecoveryAttempt,
    RecoveryResult,
    StreamHealth,
)
from recovery_worker.domain.reconcile import LedgerTxn, Mismatch, PaymentFacts, ProviderOp


class Payments(Protocol):
    def stuck(
        self, status: PaymentStatus, *, created_before: datetime
    ) -> AsyncIterator[PaymentView]:
        """Every payment in `status` created before the instant, page by page."""
        ...

    async def recover(self, attempt: RecoveryAttempt) -> RecoveryResult:
        """Asks the payment service to move the payment on (RecoverPayment): it asks the
        provider again or resumes the saga, and notes the attempt in the payment's audit trail,
        once per attempt id. A refusal (an unknown payment) raises a DomainError."""
        ...


class Wallet(Protocol):
    async def expire_holds(self, *, limit: int) -> Sequence[str]:
        """Releases expired holds of up to `limit` accounts; returns the hold ids released."""
        ...


class Pipeline(Protocol):
    async def health(self, streams: Sequence[str], *, stalled_ms: int) -> list[StreamHealth]:
        """Lag, stalled pending entries and dead letters of each stream's groups."""
        ...


class RungMemory(Protocol):
    """Which ladder rung was last tried for a payment, since its last change."""

    async def last_tried(self, payment_id: str, *, since: datetime) -> int | None: ...

    async def remember(self, payment_id: str, *, since: datetime, rung: int) -> None: ...


class Leases(Protocol):
    def hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Claims the lease `name` for the duration of the block: yields True when this
        worker holds it, False when another one does (the block must then do nothing)."""
        ...


class PaymentFactsReader(Protocol):
    """The payment service's side of the reconciliation."""

    def created_since(self, created_after: datetime) -> AsyncIterator[Sequence[PaymentFacts]]:
        """Payments created at or after the instant, a page at a time."""
        ...

    async def get(self, payment_id: str) -> PaymentFacts | None: ...


class Journal(Protocol):
    """The wallet's ledger, read as stored (an unbalanced transaction is shown, not refused)."""

    async def by_refs(self, refs: Sequence[str]) -> Sequence[LedgerTxn]:
        """The transactions under these operation refs, in one call."""
        ...

    def created_since(self, created_after: datetime) -> AsyncIterator[Sequence[LedgerTxn]]:
        """Transactions created at or after the instant, a page at a time."""
        ...


class ProviderOperations(Protocol):
    async def get(self, operation_id: str) -> ProviderOp | None:
        """The gateway's record of a provider operation; None when it has none."""
        ...


class Reviews(Protocol):
    async def open_case(self, mismatch: Mismatch) -> str:
        """Opens (or adds to) the payment's review case; returns its id. Idempotent."""
        ...


class Marks(Protocol):
    """Instants the worker remembers between runs (its high-water marks)."""

    async def get(self, name: str) -> datetime | None: ...

    async def set(self, name: str, at: datetime) -> None: ...
