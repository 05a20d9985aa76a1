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

import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter
from prometheus_client.metrics import Counter as CounterType

from common.config import ConfigError, Settings
from common.grpc.client import RECONNECT_OPTIONS
from common.grpc.connections import OWN_CONNECTIONS
from common.grpc.tracing import client_interceptors
from common.httptrace import tracing_middleware
from common.metrics import cached
from common.tokens import ServiceToken
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from webhook_adapter import facade
from webhook_adapter.forwarder import GatewayForwarder, WebhookError
from webhook_adapter.payload import MalformedWebhook, parse_callback
from webhook_adapter.signatures import SignatureError, Verifier, verifier_for
from webhook_adapter.sync import Syncer, SyncLimiter

if TYPE_CHECKING:
    from paysuite.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub
    from paysuite.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub

log = structlog.get_logger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0
GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name

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
        settings.gateway_target,
        options=[*RECONNECT_OPTIONS, *OWN_CONNECTIONS],
        interceptors=client_interceptors(token),
    )
    payments = grpc.aio.insecure_channel(
        settings.payment_target, options=OWN_CONNECTIONS, interceptors=client_interceptors()
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
