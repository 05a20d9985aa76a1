"""Hands verified events to the gateway (coalesced into HandleProviderEvents batches, held
while the gateway restarts) and maps its gRPC answers to the HTTP statuses a provider's retry
loop understands; and asks the gateway to sync an operation an unverifiable webhook names."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from common import tracing
from common.grpc.client import code_of
from paysuite.common.v1 import money_pb2
from paysuite.gateway.v1 import gateway_pb2
from webhook_adapter.payload import ProviderCallback

if TYPE_CHECKING:
    from paysuite.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub

log = structlog.get_logger(__name__)

UNVERIFIED_WEBHOOK = "unverified_webhook"

# The gateway could not take the event now; the provider's retry will deliver it again.
RETRY_LATER = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
# A fault on our side, not in the event: 502 keeps the provider retrying, so the event is
# not lost while the fault is fixed (a 4xx would make it give up).
GATEWAY_FAULTS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class WebhookError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


# The event, its caller's answer, and when it arrived (loop time).
Pending = tuple[gateway_pb2.HandleProviderEventRequest, "asyncio.Future[bool]", float]
# While the gateway is unavailable (restarting: a few seconds), a webhook is held and sent as
# soon as it is back, for up to this long after it arrived, rather than answered 503 at once:
# a provider retries on its own schedule (the simulator 3 s, then 5 s later; a real PSP after
# minutes), which would keep the payment waiting long after the gateway is back. The default
# (PAYSUITE_WEBHOOK_HOLD_MS) stays under the 10 s a provider commonly waits for an answer.


class GatewayForwarder:
    """Hands events to the gateway. Concurrent webhooks are coalesced into one
    HandleProviderEvents call (while one is in flight, the next gathers), each caller answered
    from its own result; a gateway that does not know that call gets one call per event."""

    def __init__(
        self,
        stub: GatewayServiceAsyncStub,
        *,
        timeout_s: float,
        hold_s: float = 0.0,
        max_batch: int = 128,
    ) -> None:
        self._stub = stub
        self._timeout_s = timeout_s
        self._hold_s = hold_s
        self._max_batch = max_batch
        self._batching = True
        self._queue: list[Pending] = []
        self._worker: asyncio.Task[None] | None = None

    async def forward(
        self, provider: str, callback: ProviderCallback, raw: bytes, *, request_id: str
    ) -> bool:
        """Hands the event to the gateway; True when it had seen this event before. Returns
        only once the gateway has durably recorded it."""
        request = _forward_request(provider, callback, raw)
        if not self._batching:
            return await self._forward_one(request, request_id)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future, asyncio.get_running_loop().time()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="webhook forwarding")
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                await self._send(batch)
            except Exception as exc:
                # Never leave a caller waiting: each answers from this (as a 503, so the
                # provider retries) through the error middleware.
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def _send(self, batch: list[Pending]) -> None:
        try:
            response = await self._held(
                gateway_pb2.HandleProviderEventsRequest(events=[r for r, _, _ in batch]),
                held_until=min(arrived for _, _, arrived in batch) + self._hold_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                # An older gateway during a rolling deploy: one call per event from now on.
                self._batching = False
                await asyncio.gather(*(self._settle_one(r, f) for r, f, _ in batch))
                return
            failure = _rpc_failure(exc)
            for _, future, _ in batch:
                _settle(future, failure)
            return
        for (_, future, _), result in zip(batch, response.results, strict=True):
            if result.code == grpc.StatusCode.OK.value[0]:
                _settle(future, not result.response.first_delivery)
            else:
                _settle(future, _failure(code_of(result.code), result.message))

    async def _held(
        self, request: gateway_pb2.HandleProviderEventsRequest, *, held_until: float
    ) -> gateway_pb2.HandleProviderEventsResponse:
        """The call, tried again while the gateway is unavailable until `held_until`: each
        retry waits for the channel to connect (`wait_for_ready`), so it goes out within
        the channel's reconnect backoff (at most 1 s) of the gateway being back. The gateway
        records each event once, however often it is sent."""
        loop = asyncio.get_running_loop()
        send = self._stub.HandleProviderEvents
        try:
            return await send(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
            failure = exc
        while (left := held_until - loop.time()) > 0:
            log.info("webhook.gateway_unavailable_holding", held_for_s=round(left, 1))
            await asyncio.sleep(0.05)  # a connection reset mid-call is not waited for
            try:
                return await send(request, timeout=min(self._timeout_s, left), wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
                failure = exc
        raise failure

    async def _settle_one(
        self, request: gateway_pb2.HandleProviderEventRequest, future: asyncio.Future[bool]
    ) -> None:
        try:
            _settle(future, await self._forward_one(request, ""))
        except WebhookError as exc:
            _settle(future, exc)

    async def _forward_one(
        self, request: gateway_pb2.HandleProviderEventRequest, request_id: str
    ) -> bool:
        metadata = (("x-request-id", request_id),) if request_id else ()
        try:
            response = await self._stub.HandleProviderEvent(
                request, timeout=self._timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise _rpc_failure(exc) from None
        return not response.first_delivery

    async def sync(self, operation_id: str) -> None:
        try:
            await self._stub.SyncOperation(
                gateway_pb2.SyncOperationRequest(
                    operation_id=operation_id, trigger=UNVERIFIED_WEBHOOK
                ),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            log.info("webhook.sync_failed", operation_id=operation_id, grpc_code=exc.code().name)


def _settle(future: asyncio.Future[bool], outcome: bool | WebhookError) -> None:
    if future.done():  # the caller went away (its client disconnected)
        return
    if isinstance(outcome, WebhookError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _forward_request(
    provider: str, callback: ProviderCallback, raw: bytes
) -> gateway_pb2.HandleProviderEventRequest:
    # The webhook's own trace context: a batch carries many flows, each event its own.
    carrier = tracing.inject({})
    request = gateway_pb2.HandleProviderEventRequest(
        traceparent=carrier.get("traceparent", ""),
        tracestate=carrier.get("tracestate", ""),
        provider=provider,
        provider_event_id=callback.event_id,
        event_type=callback.event_type,
        provider_reference=callback.provider_reference,
        failure_reason=callback.failure_reason,
        occurred_at=Timestamp(seconds=callback.created),
        raw_payload=raw,
        operation_id=callback.operation_reference,
    )
    if callback.amount_minor is not None and callback.currency is not None:
        request.amount.CopyFrom(
            money_pb2.Money(amount_minor=callback.amount_minor, currency=callback.currency)
        )
    return request


def _rpc_failure(exc: grpc.aio.AioRpcError) -> WebhookError:
    log.warning("webhook.forward_failed", grpc_code=exc.code().name, details=exc.details())
    return _failure(exc.code(), exc.details() or "")


def _failure(code: grpc.StatusCode, details: str) -> WebhookError:
    if code in RETRY_LATER:
        return WebhookError(503, "gateway_unavailable", "the gateway is unavailable, retry later")
    if code in GATEWAY_FAULTS:
        return WebhookError(502, "gateway_error", "the gateway could not process the event")
    status = 400 if code is grpc.StatusCode.INVALID_ARGUMENT else 422
    return WebhookError(status, code.name.lower(), details or code.name.lower())
