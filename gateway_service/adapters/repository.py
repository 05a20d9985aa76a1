"""SQL persistence of operations and received provider events.

Locking rules: an existing operation changes only under `SELECT ... FOR UPDATE` of its row, so
the provider's answer to a request and the provider's events about it serialise, and the
second sees what the first did. A provider event is claimed by inserting its key first: a
concurrent delivery of the same event waits on that key and then finds it taken.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import unique_violation_is_conflict
from common.money import Money
from gateway_service.adapters import tables as t
from gateway_service.domain.model import (
    HistoryEntry,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
    ProviderEventStatus,
)


def _operation(row: Any) -> Operation:
    return Operation(
        operation_id=str(row.operation_id),
        kind=OperationKind(row.kind),
        status=OperationStatus(row.status),
        amount=Money(row.amount_minor, row.currency),
        idempotency_key=row.idempotency_key,
        instrument=row.payment_method,
        reference=row.reference,
        provider=row.provider,
        provider_reference=row.provider_reference,
        failure_reason=row.failure_reason,
        version=row.version,
        outcome_unknown=row.outcome_unknown,
        parent_operation_id=(
            str(row.parent_operation_id) if row.parent_operation_id is not None else None
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _history(row: Any) -> HistoryEntry:
    return HistoryEntry(
        status=OperationStatus(row.status),
        provider=row.provider,
        provider_reference=row.provider_reference or "",
        failure_reason=row.failure_reason or "",
        outcome_unknown=row.outcome_unknown,
        recorded_at=row.recorded_at,
    )


class OperationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, operation_id: str, *, for_update: bool = False) -> Operation | None:
        query = select(t.operations).where(t.operations.c.operation_id == operation_id)
        return await self._one(query, for_update=for_update)

    async def find_by_idempotency_key(self, idempotency_key: str) -> Operation | None:
        query = select(t.operations).where(t.operations.c.idempotency_key == idempotency_key)
        return await self._one(query, for_update=False)

    async def find_by_provider_reference(
        self, provider: str, provider_reference: str, *, for_update: bool = False
    ) -> Operation | None:
        query = select(t.operations).where(
            t.operations.c.provider == provider,
            t.operations.c.provider_reference == provider_reference,
        )
        return await self._one(query, for_update=for_update)

    async def refunded_minor(self, charge_operation_id: str) -> int:
        query = select(func.coalesce(func.sum(t.operations.c.amount_minor), 0)).where(
            t.operations.c.parent_operation_id == charge_operation_id,
            t.operations.c.kind == OperationKind.REFUND.value,
            t.operations.c.status != OperationStatus.FAILED.value,
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def history(self, operation_id: str) -> list[HistoryEntry]:
        query = (
            select(t.operation_history)
            .where(t.operation_history.c.operation_id == operation_id)
            .order_by(t.operation_history.c.history_id)
        )
        return [_history(row) for row in await self._conn.execute(query)]

    async def add(self, operation: Operation) -> None:
        async with unique_violation_is_conflict():
            row = (
                await self._conn.execute(
                    insert(t.operations)
                    .values(**self._row(operation))
                    .returning(t.operations.c.created_at, t.operations.c.updated_at)
                )
            ).one()
        operation.created_at, operation.updated_at = row.created_at, row.updated_at
        await self._append_history(operation)

    async def _append_history(self, operation: Operation) -> None:
        await self._conn.execute(
            insert(t.operation_history).values(
                operation_id=operation.operation_id,
                version=operation.version,
                status=operation.status.value,
                provider=operation.provider,
                provider_reference=operation.provider_reference,
                failure_reason=operation.failure_reason,
                outcome_unknown=operation.outcome_unknown,
            )
        )

    async def save(self, operation: Operation) -> None:
        # The provider reference is unique: a clash means another operation claimed it.
        async with unique_violation_is_conflict():
            operation.updated_at = (
                await self._conn.execute(
                    update(t.operations)
                    .where(t.operations.c.operation_id == operation.operation_id)
                    .values(
                        status=operation.status.value,
                        provider=operation.provider,
                        provider_reference=operation.provider_reference,
                        failure_reason=operation.failure_reason,
                        version=operation.version,
                        outcome_unknown=operation.outcome_unknown,
                        updated_at=func.now(),
                    )
                    .returning(t.operations.c.updated_at)
                )
            ).scalar_one()
        await self._append_history(operation)

    async def _one(self, query: Select[Any], *, for_update: bool) -> Operation | None:
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _operation(row) if row else None

    @staticmethod
    def _row(operation: Operation) -> dict[str, Any]:
        return {
            "operation_id": operation.operation_id,
            "kind": operation.kind.value,
            "status": operation.status.value,
            "amount_minor": operation.amount.amount_minor,
            "currency": operation.amount.currency,
            "idempotency_key": operation.idempotency_key,
            "payment_method": operation.instrument,
            "reference": operation.reference,
            "provider": operation.provider,
            "provider_reference": operation.provider_reference,
            "failure_reason": operation.failure_reason,
            "version": operation.version,
            "outcome_unknown": operation.outcome_unknown,
            "parent_operation_id": operation.parent_operation_id,
        }


class ProviderEventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(self, event: ProviderEvent) -> bool:
        # Inserted as unmatched and resolved in the same transaction, so no reader ever
        # sees the interim status. DO NOTHING makes a repeat delivery a no-op, not an error.
        query = (
            pg_insert(t.provider_events)
            .values(
                provider=event.provider,
                provider_event_id=event.provider_event_id,
                event_type=event.event_type,
                provider_reference=event.provider_reference,
                status=ProviderEventStatus.UNMATCHED.value,
                occurred_at=event.occurred_at,
                raw_payload=event.raw_payload,
            )
            .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
            .returning(t.provider_events.c.provider_event_id)
        )
        return (await self._conn.execute(query)).first() is not None

    async def operation_of(self, provider: str, provider_event_id: str) -> str | None:
        operation_id = (
            await self._conn.execute(
                select(t.provider_events.c.operation_id).where(
                    t.provider_events.c.provider == provider,
                    t.provider_events.c.provider_event_id == provider_event_id,
                )
            )
        ).scalar_one_or_none()
        return str(operation_id) if operation_id is not None else None

    async def resolve(
        self,
        provider: str,
        provider_event_id: str,
        *,
        operation_id: str | None,
        status: ProviderEventStatus,
    ) -> None:
        await self._conn.execute(
            update(t.provider_events)
            .where(
                t.provider_events.c.provider == provider,
                t.provider_events.c.provider_event_id == provider_event_id,
            )
            .values(operation_id=operation_id, status=status.value)
        )
