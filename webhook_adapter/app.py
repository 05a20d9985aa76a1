"""The webhook adapter: a stateless HTTP edge in front of GatewayService.HandleProviderEvent.

Per provider it verifies the signature in that provider's format (which also bounds the
timestamp, against replays), parses the body, and forwards the event over gRPC. It answers 2xx
only once the gateway has durably recorded the event, and stores nothing itself: the gateway
deduplicates on the event id, so a provider retrying is always safe. The status codes are
chosen for that retry loop: 2xx "got it", 503 "try again later", 4xx "do not send this again".

Requests are never serialised: each is its own task, and they share one multiplexed gRPC
channel. A webhook that fails verification is never applied, but the operation it names is
synced with its provider (rate-limited), which is how a real but mis-signed callback (a
rotation gone wrong) still gets its operation settled.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import grpc
import structlog
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter
from prometheus_client.metrics import Counter as CounterType

from common import tracing
from common.config import ConfigError, Settings
from common.grpc.client import RECONNECT_OPTIONS
from common.grpc.tracing import client_interceptors
from common.httptrace import tracing_middleware
from common.metrics import cached
from common.tokens import ServiceToken
from paysuite.common.v1 import money_pb2
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from webhook_adapter import facade
from webhook_adapter.payload import (
    MalformedWebhook,
    ProviderCallback,
    parse_callback,
    unverified_reference,
)
from webhook_adapter.signatures import SignatureError, Verifier, verifier_for

if TYPE_CHECKING:
    from paysuite.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub
    from paysuite.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub

log = structlog.get_logger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0
GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
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
                _settle(future, _failure(_code(result.code), result.message))

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


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code(value: int) -> grpc.StatusCode:
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


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


class SyncLimiter:
    """Decides which unverifiable webhooks may trigger a sync: one per operation per
    `per_operation_s`, and at most `rate_per_s` overall (a token bucket), so a flood of
    forged webhooks cannot turn into a flood of provider calls."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        per_operation_s: float = 60.0,
        remember: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_s
        self._burst = max(1.0, rate_per_s)
        self._tokens = self._burst
        self._per_operation_s = per_operation_s
        self._remember = remember
        self._clock = clock
        self._last_refill = clock()
        self._recent: OrderedDict[str, float] = OrderedDict()

    def allow(self, operation_id: str) -> bool:
        now = self._clock()
        last = self._recent.get(operation_id)
        if last is not None and now - last < self._per_operation_s:
            return False
        self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self._rate)
        self._last_refill = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        self._recent[operation_id] = now
        self._recent.move_to_end(operation_id)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return True


class Syncer:
    """Runs the syncs the limiter allows in the background, so the 401 is not delayed."""

    def __init__(self, forwarder: GatewayForwarder, limiter: SyncLimiter) -> None:
        self._forwarder = forwarder
        self._limiter = limiter
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_sync(self, body: bytes) -> bool:
        reference = unverified_reference(body)
        if not _is_uuid(reference) or not self._limiter.allow(reference):
            return False
        task = asyncio.create_task(self._forwarder.sync(reference))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


VERIFIERS = web.AppKey("verifiers", dict[str, Verifier])
FORWARDER = web.AppKey("forwarder", GatewayForwarder)
SYNCER = web.AppKey("syncer", Syncer)
Probe = Callable[[], Awaitable[bool]]
HEALTH: web.AppKey[Probe] = web.AppKey("health")
REQUEST_ID = web.RequestKey("request_id", str)


def _error_response(
    status: int, code: str, message: str, field: str | None = None, reason: str = ""
) -> web.Response:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    if reason:
        error["reason"] = reason
    return web.json_response({"error": error}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error; no traceback ever reaches the caller."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        return await handler(request)
    except facade.FacadeError as exc:
        return _error_response(exc.status, exc.code, exc.message, exc.field, exc.reason)
    except WebhookError as exc:
        return _error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404 (unknown route), 405 and 413 (body over the size limit).
        phrase = HTTPStatus(exc.status).phrase
        return _error_response(exc.status, phrase.lower().replace(" ", "_"), phrase)
    except Exception:
        log.exception("webhook.internal_error", method=request.method, path=request.path)
        return _error_response(503, "internal", "the webhook could not be taken now, retry")


RECEIPTS = Counter(
    "webhook_receipts_total",
    "Webhooks received, by provider and result: accepted, duplicate, rejected_signature,"
    " bad_request (malformed, too large, refused by the gateway, or an unknown provider,"
    " counted as provider 'unknown'), unavailable (answered 5xx: the provider retries).",
    ["provider", "result"],
)


def _bind_receipt(key: tuple[str, str]) -> CounterType:
    return RECEIPTS.labels(*key)


_receipt = cached(_bind_receipt)


def _result_of(exc: Exception) -> str:
    status = exc.status if isinstance(exc, WebhookError | web.HTTPException) else 503
    if status == HTTPStatus.UNAUTHORIZED:
        return "rejected_signature"
    return "unavailable" if status >= 500 else "bad_request"


async def receive_webhook(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    verifier = request.app[VERIFIERS].get(provider)
    if verifier is None:
        # The name is the caller's text: never a label value.
        _receipt(("unknown", "bad_request")).inc()
        raise WebhookError(404, "unknown_provider", f"no webhooks are taken for {provider!r}")
    try:
        duplicate = await _receive(request, provider, verifier)
    except Exception as exc:
        _receipt((provider, _result_of(exc))).inc()
        raise
    _receipt((provider, "duplicate" if duplicate else "accepted")).inc()
    # Never the body (it names the customer's instrument) or the headers (the signature).
    log.info("webhook.accepted", provider=provider, duplicate=duplicate)
    return web.json_response({"status": "accepted", "duplicate": duplicate})


async def _receive(request: web.Request, provider: str, verifier: Verifier) -> bool:
    body = await request.read()
    try:
        verifier.verify(body, request.headers)
    except SignatureError as exc:
        synced = request.app[SYNCER].maybe_sync(body)
        log.warning("webhook.rejected", provider=provider, reason=exc.reason, synced=synced)
        raise WebhookError(401, exc.reason, exc.message) from None
    try:
        callback = parse_callback(body)
    except MalformedWebhook as exc:
        raise WebhookError(400, exc.code, exc.message, exc.field) from None
    return await request.app[FORWARDER].forward(
        provider, callback, body, request_id=request[REQUEST_ID]
    )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if await request.app[HEALTH]():
        return web.json_response({"status": "ready"})
    return _error_response(503, "gateway_unavailable", "the gateway is not serving")


def _health_probe(
    channel: grpc.aio.Channel | None, timeout_s: float
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        if channel is None:
            return True
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(  # type: ignore[attr-defined]  # the typeshed HealthStub declares no methods
                health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def _verifiers(settings: Settings) -> dict[str, Verifier]:
    verifiers: dict[str, Verifier] = {}
    for config in settings.provider_configs():
        try:
            verifiers[config.name] = verifier_for(
                config.signature_format,
                [secret.get_secret_value() for secret in config.webhook_secrets],
                tolerance_s=settings.webhook_tolerance_s,
            )
        except ConfigError as exc:
            raise ConfigError(
                f"{config.name}: {exc} (PAYSUITE_WEBHOOK_SECRET,"
                " PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET or PAYSUITE_PROVIDERS)"
            ) from None
    return verifiers


def create_app(
    settings: Settings,
    gateway: grpc.aio.Channel | GatewayServiceAsyncStub,
    payments: grpc.aio.Channel | PaymentServiceAsyncStub | None = None,
) -> web.Application:
    """The adapter's app, with the HTTP facade when given the payment service. Channels
    passed in stay the caller's to close. Raises ConfigError for the public development
    secrets unless they are explicitly allowed."""
    settings.check_no_dev_secrets()
    channel: grpc.aio.Channel | None = None
    if isinstance(gateway, grpc.aio.Channel):
        channel, stub = gateway, gateway_pb2_grpc.GatewayServiceStub(gateway)
    else:
        stub = gateway
    app = web.Application(
        middlewares=[tracing_middleware, json_errors],
        client_max_size=settings.webhook_max_body_bytes,
    )
    forwarder = GatewayForwarder(
        stub,
        timeout_s=settings.rpc_timeout_ms / 1000,
        hold_s=settings.webhook_hold_ms / 1000,
    )
    syncer = Syncer(forwarder, SyncLimiter(rate_per_s=settings.webhook_sync_per_s))
    app[VERIFIERS] = _verifiers(settings)
    app[FORWARDER] = forwarder
    app[SYNCER] = syncer
    app[HEALTH] = _health_probe(channel, timeout_s=1.0)

    async def stop_syncs(_: web.Application) -> None:
        await syncer.close()
        await forwarder.close()

    app.on_cleanup.append(stop_syncs)
    app.router.add_post("/webhooks/{provider}", receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if payments is not None:
        facade.add_routes(app, payments)
    return app


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start(settings: Settings, listen: str) -> tuple[web.AppRunner, int]:
    """Starts listening on `listen` (HOST:PORT, port 0 picks a free one) with its own gRPC
    channel to the gateway. Returns the runner (`await runner.cleanup()` stops it, and
    closes the channel) and the bound port."""
    # Not common.grpc.client.create_channel: the adapter answers 503 and lets the provider
    # retry rather than retrying inside gRPC, so only the interceptors are shared.
    # The webhook routes act as a service; the facade's calls carry their caller's token.
    token = ServiceToken(settings, "webhook-adapter")
    channel = grpc.aio.insecure_channel(
        settings.gateway_target, options=RECONNECT_OPTIONS, interceptors=client_interceptors(token)
    )
    payments = grpc.aio.insecure_channel(
        settings.payment_target, interceptors=client_interceptors()
    )
    try:
        app = create_app(settings, channel, payments)
    except BaseException:
        await channel.close()
        await payments.close()
        raise

    async def close_channel(_: web.Application) -> None:
        await channel.close()
        await payments.close()

    app.on_cleanup.append(close_channel)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    host, port = _host_port(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    log.info("webhook.started", host=host, port=bound, gateway_target=settings.gateway_target)
    if settings.allow_dev_secrets:
        log.warning("webhook.development_secrets_allowed", env_var="PAYSUITE_ALLOW_DEV_SECRETS")
    return runner, bound
