"""SQL persistence of payments. Status changes are written with their history rows (the audit
trail) in the caller's transaction; a save checks the version it read, so a lost update is
impossible even without a row lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import unique_violation_is_conflict
from common.errors import ConcurrentUpdate
from common.money import Money
from common.streams import mark_processed
from payment_service.adapters import tables as t
from payment_service.domain.model import (
    Payment,
    PaymentKind,
    PaymentStatus,
    StatusChange,
)


def _payment(row: Any) -> Payment:
    return Payment(
        payment_id=str(row.payment_id),
        kind=PaymentKind(row.kind),
        status=PaymentStatus(row.status),
        amount=Money(row.amount_minor, row.currency),
        idempotency_key=row.idempotency_key,
        source_account_id=str(row.source_account_id or ""),
        destination_account_id=str(row.destination_account_id or ""),
        payment_method=row.payment_method,
        failure_reason=row.failure_reason,
        gateway_operation_id=row.gateway_operation_id,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class PaymentRepository:
    """Every payment it hands out or adds is registered with the unit of work (`track`), which
    harvests their events into the outbox at commit: no call site can forget one."""

    def __init__(self, conn: AsyncConnection, *, track: Callable[[Payment], None]) -> None:
        self._conn = conn
        self._track = track

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        query = select(t.payments).where(t.payments.c.payment_id == payment_id)
        if for_update:
            query = query.with_for_update()
        return self._seen((await self._conn.execute(query)).first())

    async def by_idempotency_key(self, key: str) -> Payment | None:
        query = select(t.payments).where(t.payments.c.idempotency_key == key)
        return self._seen((await self._conn.execute(query)).first())

    def _seen(self, row: Any) -> Payment | None:
        if row is None:
            return None
        payment = _payment(row)
        self._track(payment)
        return payment

    async def add(self, payment: Payment) -> None:
        self._track(payment)
        async with unique_violation_is_conflict():
            await self._conn.execute(
                insert(t.payments).values(
                    payment_id=payment.payment_id,
                    kind=payment.kind.value,
                    idempotency_key=payment.idempotency_key,
                    amount_minor=payment.amount.amount_minor,
                    currency=payment.amount.currency,
                    source_account_id=payment.source_account_id or None,
                    destination_account_id=payment.destination_account_id or None,
                    payment_method=payment.payment_method,
                    created_at=payment.created_at,
                    **self._mutable(payment),
                )
            )
        await self._write_history(payment)

    async def save(self, payment: Payment) -> None:
        """Writes the payment's new changes; nothing when it has none (its events, if any,
        still reach the outbox through the unit of work)."""
        if not payment.has_changes:
            return
        expected = payment.version - len(payment.new_changes)
        result = await self._conn.execute(
            update(t.payments)
            .where(t.payments.c.payment_id == payment.payment_id)
            .where(t.payments.c.version == expected)
            .values(**self._mutable(payment))
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"payment {payment.payment_id} changed concurrently")
        await self._write_history(payment)

    async def history(self, payment_id: str) -> list[StatusChange]:
        h = t.payment_status_history
        rows = await self._conn.execute(
            select(h).where(h.c.payment_id == payment_id).order_by(h.c.sequence)
        )
        return [
            StatusChange(
                sequence=r.sequence,
                from_status=PaymentStatus(r.from_status) if r.from_status else None,
                to_status=PaymentStatus(r.to_status),
                reason=r.reason,
                occurred_at=r.occurred_at,
            )
            for r in rows
        ]

    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None
    ) -> list[tuple[int, Payment]]:
        query = select(t.payments).order_by(t.payments.c.seq.desc()).limit(limit)
        if account_id:
            query = query.where(
                or_(
                    t.payments.c.destination_account_id == account_id,
                    t.payments.c.source_account_id == account_id,
                )
            )
        if before_seq is not None:
            query = query.where(t.payments.c.seq < before_seq)
        rows = (await self._conn.execute(query)).all()
        return [(row.seq, _payment(row)) for row in rows]

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        return await mark_processed(self._conn, consumer, event_id)

    async def _write_history(self, payment: Payment) -> None:
        if not payment.new_changes:
            return
        await self._conn.execute(
            insert(t.payment_status_history),
            [
                {
                    "payment_id": payment.payment_id,
                    "sequence": c.sequence,
                    "from_status": c.from_status.value if c.from_status else None,
                    "to_status": c.to_status.value,
                    "reason": c.reason,
                    "occurred_at": c.occurred_at,
                }
                for c in payment.new_changes
            ],
        )
        payment.new_changes = []

    @staticmethod
    def _mutable(payment: Payment) -> dict[str, Any]:
        return {
            "status": payment.status.value,
            "failure_reason": payment.failure_reason,
            "gateway_operation_id": payment.gateway_operation_id,
            "version": payment.version,
            "updated_at": payment.updated_at,
        }
