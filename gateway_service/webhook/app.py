"""The webhook adapter: a stateless HTTP edge in front of GatewayService.HandleProviderEvent.

It verifies the Standard Webhooks signature (which also bounds the timestamp, against
replays), parses the body, and forwards the event over gRPC. It stores nothing: the gateway
deduplicates on the event id, so a provider retrying is always safe, and the status codes are
chosen for that retry loop: 2xx "got it", 503 "try again later", 4xx "do not send this again".
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import grpc
import structlog
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.config import DEV_WEBHOOK_SECRET, ConfigError, Settings
from gateway_service.webhook.payload import MalformedWebhook, ProviderCallback, parse_callback
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from paysuite.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
KNOWN_PROVIDERS = frozenset({"simulator"})
SHUTDOWN_TIMEOUT_S = 5.0

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


class Verifier:
    def __init__(self, secret: str) -> None:
        _check_secret(secret)
        self._webhook = Webhook(secret)

    def verify(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            self._webhook.verify(body, headers, json_parse=False)
        # ValueError: undecodable body or base64, a signature without its "v1," prefix.
        except (WebhookVerificationError, ValueError):
            raise WebhookError(
                401, "invalid_signature", "the webhook signature is missing or does not verify"
            ) from None


def _check_secret(secret: str) -> None:
    """Strict where standardwebhooks is lenient: a typo in the secret would otherwise show
    up only as every webhook failing to verify. Messages never echo the secret."""
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise ConfigError(
            "PAYSUITE_WEBHOOK_SECRET: must be base64, optionally prefixed with 'whsec_'"
        ) from None
    if not key:
        raise ConfigError("PAYSUITE_WEBHOOK_SECRET: must not be empty")


class GatewayForwarder:
    def __init__(self, stub: GatewayServiceAsyncStub, *, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def forward(
        self, provider: str, callback: ProviderCallback, raw: bytes, *, request_id: str
    ) -> bool:
        """Hands the event to the gateway; True when it had seen this event before."""
        request = gateway_pb2.HandleProviderEventRequest(
            provider=provider,
            provider_event_id=callback.event_id,
            event_type=callback.event_type,
            provider_reference=callback.charge_id,
            failure_reason=callback.failure_reason,
            occurred_at=Timestamp(seconds=callback.created),
            raw_payload=raw,
        )
        try:
            response = await self._stub.HandleProviderEvent(
                request, timeout=self._timeout_s, metadata=(("x-request-id", request_id),)
            )
        except grpc.aio.AioRpcError as exc:
            raise _rpc_failure(exc) from None
        return not response.first_delivery


def _rpc_failure(exc: grpc.aio.AioRpcError) -> WebhookError:
    code = exc.code()
    log.warning("webhook.forward_failed", grpc_code=code.name, details=exc.details())
    if code in RETRY_LATER:
        return WebhookError(503, "gateway_unavailable", "the gateway is unavailable, retry later")
    if code in GATEWAY_FAULTS:
        return WebhookError(502, "gateway_error", "the gateway could not process the event")
    status = 400 if code is grpc.StatusCode.INVALID_ARGUMENT else 422
    return WebhookError(status, code.name.lower(), exc.details() or code.name.lower())


VERIFIER = web.AppKey("verifier", Verifier)
FORWARDER = web.AppKey("forwarder", GatewayForwarder)
REQUEST_ID = web.RequestKey("request_id", str)


def _error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error; no traceback ever reaches the caller."""
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        return await handler(request)
    except WebhookError as exc:
        return _error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404 (unknown route), 405 and 413 (body over MAX_BODY_BYTES).
        phrase = HTTPStatus(exc.status).phrase
        return _error_response(exc.status, phrase.lower().replace(" ", "_"), phrase)
    except Exception:
        log.exception("webhook.internal_error", method=request.method, path=request.path)
        return web.json_response({"error": {"code": "internal"}}, status=500)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


async def receive_webhook(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    if provider not in KNOWN_PROVIDERS:
        raise WebhookError(404, "unknown_provider", f"no webhooks are taken for {provider!r}")
    body = await request.read()
    request.app[VERIFIER].verify(body, dict(request.headers))
    try:
        callback = parse_callback(body)
    except MalformedWebhook as exc:
        raise WebhookError(400, "malformed_payload", exc.message, exc.field) from None
    duplicate = await request.app[FORWARDER].forward(
        provider, callback, body, request_id=request[REQUEST_ID]
    )
    log.info(
        "webhook.accepted",
        provider=provider,
        event_id=callback.event_id,
        event_type=callback.event_type,
        duplicate=duplicate,
    )
    return web.json_response({"status": "accepted", "duplicate": duplicate})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(
    settings: Settings, gateway: grpc.aio.Channel | GatewayServiceAsyncStub
) -> web.Application:
    """The adapter's app. A channel passed in stays the caller's to close."""
    stub = (
        gateway_pb2_grpc.GatewayServiceStub(gateway)
        if isinstance(gateway, grpc.aio.Channel)
        else gateway
    )
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[VERIFIER] = Verifier(settings.webhook_secret.get_secret_value())
    app[FORWARDER] = GatewayForwarder(stub, timeout_s=settings.rpc_timeout_ms / 1000)
    app.router.add_post("/webhooks/{provider}", receive_webhook)
    app.router.add_get("/healthz", healthz)
    return app


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start(settings: Settings, listen: str) -> tuple[web.AppRunner, int]:
    """Starts listening on `listen` (HOST:PORT, port 0 picks a free one) with its own gRPC
    channel to the gateway. Returns the runner (`await runner.cleanup()` stops it, and
    closes the channel) and the bound port."""
    channel = grpc.aio.insecure_channel(settings.gateway_target)
    try:
        app = create_app(settings, channel)
    except BaseException:
        await channel.close()
        raise

    async def close_channel(_: web.Application) -> None:
        await channel.close()

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
    if settings.webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
        log.warning("webhook.development_secret", env_var="PAYSUITE_WEBHOOK_SECRET")
    return runner, bound
