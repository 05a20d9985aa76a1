"""The payment service's periodic chores: forgetting idempotency keys past their retention,
resuming sagas that stopped between two steps, and the review cases' SLA alarm."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from common.aio import wait_any
from common.errors import DependencyUnavailable
from common.supervision import beat
from payment_service.service_layer.reviews import ReviewService
from payment_service.service_layer.services import PaymentService

log = structlog.get_logger(__name__)

EVERY_S = 3600.0
# A round of any chore may take this long beyond its interval before it counts as stalled.
ROUND_SLACK_S = 120.0


class Housekeeping:
    def __init__(self, service: PaymentService, *, key_retention: timedelta) -> None:
        self._service = service
        self._key_retention = key_retention
        self.heartbeat_s = EVERY_S + ROUND_SLACK_S

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            try:
                purged = await self._service.purge_idempotency_keys(older_than=self._key_retention)
                if purged:
                    log.info("payment.idempotency_keys_purged", count=purged)
            except DependencyUnavailable as exc:
                log.warning("payment.housekeeping_deferred", error=str(exc))
            await wait_any(stop, at_most_s=EVERY_S)


class SagaResumer:
    """Every so often, resumes payments whose saga stopped between steps (see
    `PaymentService.resume_stalled`); checks twice per threshold, so a stalled payment waits
    at most one and a half thresholds."""

    def __init__(self, service: PaymentService, *, after: timedelta) -> None:
        self._service = service
        self._after = after
        self.heartbeat_s = after.total_seconds() / 2 + ROUND_SLACK_S

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            try:
                resumed = await self._service.resume_stalled(older_than=self._after)
                if resumed:
                    log.info("payment.sagas_resumed", count=resumed)
            except DependencyUnavailable as exc:
                log.warning("payment.resume_deferred", error=str(exc))
            await wait_any(stop, at_most_s=self._after.total_seconds() / 2)


class ReviewSlaAlarm:
    """Every minute, logs a WARNING for each review case open past its SLA; the stored alarm
    time keeps it to once per case per hour, across restarts and replicas."""

    EVERY_S = 60.0

    def __init__(self, reviews: ReviewService) -> None:
        self._reviews = reviews
        self.heartbeat_s = self.EVERY_S + ROUND_SLACK_S

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            try:
                await self._reviews.alarm_overdue()
            except DependencyUnavailable as exc:
                log.warning("payment.review_alarm_deferred", error=str(exc))
            await wait_any(stop, at_most_s=self.EVERY_S)
