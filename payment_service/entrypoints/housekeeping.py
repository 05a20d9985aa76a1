"""The payment service's periodic chores: forgetting idempotency keys past their retention,
resuming sagas that stopped between two steps, and the review cases' SLA alarm."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from common.aio import wait_any
from common.errors import DependencyUnavailable
from common.supervision import beat
from payment_service.service_layer.create import PaymentRequests
from payment_service.service_layer.recovery import Recovery
from payment_service.service_layer.reviews import ReviewService

log = structlog.get_logger(__name__)

EVERY_S = 3600.0
PAGE = 100  # payments one resume takes at once
MAX_PAGES = 10  # pages one sweep takes at most
# A round of any chore may take this long beyond its interval before it counts as stalled.
ROUND_SLACK_S = 120.0


class Housekeeping:
    def __init__(self, requests: PaymentRequests, *, key_retention: timedelta) -> None:
        self._requests = requests
        self._key_retention = key_retention
        self.heartbeat_s = EVERY_S + ROUND_SLACK_S

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            try:
                purged = await self._requests.purge_idempotency_keys(older_than=self._key_retention)
                if purged:
                    log.info("payment.idempotency_keys_purged", count=purged)
            except DependencyUnavailable as exc:
                log.warning("payment.housekeeping_deferred", error=str(exc))
            await wait_any(stop, at_most_s=EVERY_S)


class SagaResumer:
    """Resumes payments whose saga stopped between steps (see `Recovery.resume_stalled`).

    At start-up, at once and with a threshold of `AT_START`: this replica may be the restart
    of one killed between two steps (a withdrawal whose hold was placed and not recorded, a
    deposit whose charge was sent and not answered), and those payments have waited since the
    kill already; waiting out the full threshold again is what kept them for 30 s. A payment
    another replica is moving on right now may be resumed too: every step is idempotent on its
    key, so that costs a repeated call, never a repeated effect. Then every half threshold, so
    a payment stalled later waits at most one and a half thresholds.

    Every `RETRY_S` besides, the request-path steps an outage interrupted in this process
    (`Recovery.resume_deferred`): a withdrawal whose hold the wallet could not place
    moves on within a second of the wallet being back."""

    # Shorter than any restart (`paysuite up` waits 0.5 s before one, and a process takes
    # longer than that to start), longer than a request path's steps take.
    AT_START = timedelta(seconds=1)
    RETRY_S = 1.0

    def __init__(self, recovery: Recovery, *, after: timedelta) -> None:
        self._recovery = recovery
        self._after = after
        self.heartbeat_s = after.total_seconds() / 2 + ROUND_SLACK_S

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        threshold, next_sweep = min(self.AT_START, self._after), 0.0
        while not stop.is_set():
            beat()
            if loop.time() >= next_sweep:
                try:
                    await self._sweep(threshold)
                except DependencyUnavailable as exc:
                    log.warning("payment.resume_deferred", error=str(exc))
                    # The start-up sweep is still owed: soon, with its threshold.
                    owed = threshold < self._after
                    wait_s = self.RETRY_S if owed else self._after.total_seconds() / 2
                    next_sweep = loop.time() + wait_s
                else:
                    threshold = self._after
                    next_sweep = loop.time() + self._after.total_seconds() / 2
            await self._recovery.resume_deferred()
            await wait_any(stop, at_most_s=self.RETRY_S)

    async def _sweep(self, threshold: timedelta) -> None:
        """Resumes the payments stalled past `threshold`, a page at a time (a bounded number
        of pages: while a dependency is down, the same payments would come back forever)."""
        for _ in range(MAX_PAGES):
            resumed = await self._recovery.resume_stalled(older_than=threshold, limit=PAGE)
            if resumed:
                log.info("payment.sagas_resumed", count=resumed)
            if resumed < PAGE:
                return


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
