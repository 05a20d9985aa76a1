"""The payment service's periodic chores: forgetting idempotency keys past their retention."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from common.aio import wait_any
from common.errors import DependencyUnavailable
from payment_service.service_layer.services import PaymentService

log = structlog.get_logger(__name__)

EVERY_S = 3600.0


class Housekeeping:
    def __init__(self, service: PaymentService, *, key_retention: timedelta) -> None:
        self._service = service
        self._key_retention = key_retention

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                purged = await self._service.purge_idempotency_keys(older_than=self._key_retention)
                if purged:
                    log.info("payment.idempotency_keys_purged", count=purged)
            except DependencyUnavailable as exc:
                log.warning("payment.housekeeping_deferred", error=str(exc))
            await wait_any(stop, at_most_s=EVERY_S)
