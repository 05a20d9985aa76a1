"""Signed webhook delivery with provider-style retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import structlog
from opentelemetry import trace
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from common import tracing
from common.httptrace import client_span, record_status
from provider_simulator.models import WebhookEvent
from provider_simulator.signing import Signer

log = structlog.get_logger(__name__)

ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=10)
# Statuses that mean "try later" even though they are 4xx; every other 4xx is the receiver
# refusing this event, and repeating an identical request will not change its mind.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


class _RetryableFailure(Exception):
    """An attempt that failed in a way worth retrying (connection error, timeout, 5xx...)."""


class WebhookSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        url: str,
        signer: Signer,
        max_attempts: int,
        max_concurrent: int = 64,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        on_change: Callable[[WebhookEvent], None] = lambda _: None,
    ) -> None:
        self._session = session
        self._url = url
        self._signer = signer
        self._max_attempts = max_attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._slots = asyncio.Semaphore(max_concurrent)
        self._on_change = on_change

    async def deliver(self, event: WebhookEvent) -> None:
        """Send ``event`` until the receiver accepts it, rejects it, or attempts run out."""
        try:
            await self._deliver(event)
        finally:
            self._on_change(event)

    async def _deliver(self, event: WebhookEvent) -> None:
        event.state = "pending"
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential(multiplier=self._initial_backoff, max=self._max_backoff),
            retry=retry_if_exception_type(_RetryableFailure),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(event)
        except _RetryableFailure:
            event.state = "failed"
            log.warning(
                "webhook.gave_up",
                event_id=event.id,
                attempts=event.attempts,
                last_status=event.last_status,
            )

    async def _attempt(self, event: WebhookEvent) -> None:
        event.attempts += 1
        # Only the request holds a slot, never the backoff sleep between attempts.
        async with self._slots:
            await self._post(event)

    async def _post(self, event: WebhookEvent) -> None:
        # Each attempt a client span in the trace of the operation the event reports.
        parent = tracing.extract(event.trace)
        with client_span("POST", "webhook", parent=parent) as (span, trace_headers):
            await self._post_traced(event, span, trace_headers)

    async def _post_traced(
        self, event: WebhookEvent, span: trace.Span, trace_headers: dict[str, str]
    ) -> None:
        try:
            async with self._session.post(
                self._url,
                data=event.body.encode(),
                headers={**self._headers(event), **trace_headers},
                # Standard Webhooks senders do not follow redirects: a redirect is a
                # misconfigured endpoint, and following it would re-send to an unvetted URL.
                allow_redirects=False,
                timeout=ATTEMPT_TIMEOUT,
            ) as response:
                status = response.status
                record_status(span, status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            event.last_status = None
            log.info(
                "webhook.attempt_failed",
                event_id=event.id,
                attempt=event.attempts,
                error=type(exc).__name__,
            )
            raise _RetryableFailure from exc

        event.last_status = status
        if 200 <= status < 300:
            event.state = "delivered"
            log.info("webhook.delivered", event_id=event.id, attempt=event.attempts, status=status)
            return
        if 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
            event.state = "failed"
            log.warning(
                "webhook.rejected", event_id=event.id, attempt=event.attempts, status=status
            )
            return
        log.info("webhook.attempt_failed", event_id=event.id, attempt=event.attempts, status=status)
        raise _RetryableFailure

    def _headers(self, event: WebhookEvent) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "user-agent": "paysuite-provider-simulator",
            **self._signer.headers(event.id, event.body),
        }
