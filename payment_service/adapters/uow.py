from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from common.uow import EventSource, SqlUnitOfWork
from payment_service.adapters import metrics
from payment_service.adapters.event_mapping import to_outgoing
from payment_service.adapters.repository import PaymentRepository


class PaymentUnitOfWork(SqlUnitOfWork):
    payments: PaymentRepository

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, to_outgoing)

    def _open(self) -> None:
        self.payments = PaymentRepository(self.conn, self.raw, track=self.track)

    def _committed(self, events: list[Any], aggregates: list[EventSource]) -> None:
        metrics.record_committed(events, aggregates)
