from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from common.outbox import outbox_document
from common.uow import EventSource, SqlUnitOfWork
from payment_service.adapters import metrics
from payment_service.adapters.event_mapping import to_outgoing
from payment_service.adapters.repository import PaymentRepository
from payment_service.domain.model import Payment
from payment_service.domain.requests import IdempotencyClaim


class PaymentUnitOfWork(SqlUnitOfWork):
    payments: PaymentRepository

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, to_outgoing)

    def _open(self) -> None:
        self.payments = PaymentRepository(
            self.conn, self.raw, track=self.track, take_outgoing=self.take_outgoing
        )

    async def create(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment]
    ) -> builtins.list[IdempotencyClaim | None]:
        """Creates as ONE statement in autocommit: the keys, the payments whose key was free,
        their trail and their outbox rows, a transaction of its own. A create was BEGIN, that
        insert, the outbox insert and COMMIT: four round trips on the request path, each a
        wait for PostgreSQL and then for this process to be scheduled again."""
        events = [payment.pull_events() for payment in payments]
        outgoing = self._mapped([event for batch in events for event in batch])
        async with self.autocommit():
            priors = await self.payments.create(claims, payments, outbox_document(outgoing))
        created = [
            (payment, batch)
            for payment, batch, prior in zip(payments, events, priors, strict=True)
            if prior is None
        ]
        aggregates: builtins.list[EventSource] = [payment for payment, _ in created]
        self.committed(
            [event for _, batch in created for event in batch],
            aggregates,
            wrote_outbox=bool(created and outgoing),
        )
        return priors

    def _committed(self, events: list[Any], aggregates: list[EventSource]) -> None:
        metrics.record_committed(events, aggregates)
