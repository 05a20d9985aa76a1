"""HTTP surface of the simulator: the provider API, health, and ``/_sim/`` operator controls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from aiohttp import web
from pydantic import ValidationError

from common import tracing
from common.httptrace import tracing_middleware
from provider_simulator.chaos import Chaos
from provider_simulator.delivery import WebhookSender
from provider_simulator.engine import Simulator, SimulatorError
from provider_simulator.models import KINDS, REQUEST_MODELS, Kind
from provider_simulator.settings import SimulatorSettings
from provider_simulator.signing import Signer
from provider_simulator.store import Store

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", SimulatorSettings)
SIMULATOR = web.AppKey("simulator", Simulator)

# Handlers are all quick; there is nothing worth waiting a minute for on shutdown.
SHUTDOWN_TIMEOUT = 5.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def _error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "field": field}}
    return web.json_response(body, status=status)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure leaves as the documented JSON error shape; no tracebacks reach clients."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_response(exc.status, exc.code, exc.message, exc.field)
    except SimulatorError as exc:
        response = _error_response(exc.status, exc.code, exc.message, exc.field)
        # Says whether the request did anything, so a client knows if another provider may be
        # asked instead (a PSP's equivalent: Stripe's "should retry" semantics on 503).
        response.headers["Provider-Processed"] = "true" if exc.processed else "false"
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Covers aiohttp's own 404 (unknown route), 405 and 413 (body too large).
        phrase = HTTPStatus(exc.status).phrase
        response = _error_response(exc.status, phrase.lower().replace(" ", "_"), phrase)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("request.failed", method=request.method, path=request.path)
        return _error_response(500, "internal_error", "internal error")


IDEMPOTENCY_HEADER = "Idempotency-Key"


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload: Any = json.loads(await request.read())
    except ValueError:  # also UnicodeDecodeError
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return payload


def _validated(kind: Kind, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return REQUEST_MODELS[kind].model_validate(payload).model_dump(exclude_none=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        code = "missing_field" if error["type"] == "missing" else "invalid_field"
        raise ApiError(400, code, error["msg"], field) from None


def _idempotency_key(request: web.Request, body: dict[str, Any]) -> str:
    header = request.headers.get(IDEMPOTENCY_HEADER, "")
    in_body = body.pop("idempotency_key", None)
    if header and in_body and header != in_body:
        raise ApiError(
            400, "invalid_field", "differs from the Idempotency-Key header", "idempotency_key"
        )
    key = header or in_body
    if not isinstance(key, str) or not key or len(key) > 255:
        raise ApiError(
            400, "missing_field", "the Idempotency-Key header is required", IDEMPOTENCY_HEADER
        )
    return key


def _operation_handler(kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def create(request: web.Request) -> web.Response:
        simulator = request.app[SIMULATOR]
        body = _validated(kind, await _json_object(request))
        key = _idempotency_key(request, body)
        simulator.check_available()
        await simulator.maybe_drop()
        operation, created = simulator.create(kind, key, body, trace=dict(tracing.inject({})))
        await simulator.maybe_never_answer()
        if created:
            return web.json_response(operation.to_json(), status=202)
        # A replay returns the operation as it is now (possibly settled), which is what a
        # client retrying after a lost response needs to learn.
        return web.json_response(operation.to_json(), headers={"Idempotent-Replayed": "true"})

    return create


def _lookup_handler(kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def lookup(request: web.Request) -> web.Response:
        simulator = request.app[SIMULATOR]
        simulator.check_available()
        operation = simulator.find(
            kind,
            operation_id=request.match_info.get("operation_id", ""),
            idempotency_key=request.query.get("idempotency_key", ""),
        )
        if operation is None:
            # An explicit answer: this provider has no such operation, so it moved no money.
            raise ApiError(404, f"{kind}_not_found", f"no such {kind}")
        return web.json_response(operation.to_json())

    return lookup


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_events(request: web.Request) -> web.Response:
    events = [event.to_json() for event in request.app[SIMULATOR].events.values()]
    return web.json_response({"events": events})


async def list_operations(request: web.Request) -> web.Response:
    operations = [op.to_json() for op in request.app[SIMULATOR].operations.values()]
    return web.json_response({"operations": operations})


async def redeliver_event(request: web.Request) -> web.Response:
    event = request.app[SIMULATOR].redeliver(request.match_info["event_id"])
    if event is None:
        raise ApiError(404, "event_not_found", "no such event")
    return web.json_response(event.to_json(), status=202)


async def get_config(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "name": settings.name,
            "signature_format": settings.signature_format,
            "seed": settings.seed,
            "unanswered_requests": simulator.unanswered,
            "dropped_requests": simulator.dropped,
            **simulator.chaos.model_dump(),
        }
    )


async def patch_config(request: web.Request) -> web.Response:
    """Operator control: change chaos knobs at run time (`paysuite sim set ...`)."""
    simulator = request.app[SIMULATOR]
    try:
        simulator.chaos = simulator.chaos.update(await _json_object(request))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        raise ApiError(400, "invalid_field", error["msg"], field) from None
    log.info("simulator.reconfigured", **simulator.chaos.model_dump())
    return await get_config(request)


def _chaos(settings: SimulatorSettings) -> Chaos:
    return Chaos.model_validate(settings.model_dump(include=set(Chaos.model_fields)))


async def _simulator_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    path = settings.data_dir / f"{settings.name}.jsonl" if settings.data_dir else None
    store = Store(path)
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(
            session,
            url=settings.webhook_url,
            signer=Signer(settings.signature_format, settings.webhook_secret.get_secret_value()),
            max_attempts=settings.webhook_max_attempts,
            max_concurrent=settings.max_concurrent_deliveries,
            initial_backoff=settings.webhook_initial_backoff_ms / 1000,
            on_change=store.save_event,
        )
        simulator = Simulator(sender, chaos=_chaos(settings), seed=settings.seed, store=store)
        app[SIMULATOR] = simulator
        simulator.resume()
        yield
        # Before the session closes, so no delivery is cut off mid-request by a closed session.
        await simulator.close()


async def _release_unanswered(app: web.Application) -> None:
    # Before aiohttp waits for in-flight handlers: the ones the chaos holds end now.
    app[SIMULATOR].release_unanswered()


def create_app(settings: SimulatorSettings) -> web.Application:
    app = web.Application(middlewares=[tracing_middleware, json_errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_simulator_context)
    app.on_shutdown.append(_release_unanswered)
    for kind in KINDS:
        app.router.add_post(f"/v1/{kind}s", _operation_handler(kind))
        app.router.add_get(f"/v1/{kind}s", _lookup_handler(kind))
        app.router.add_get(f"/v1/{kind}s/{{operation_id}}", _lookup_handler(kind))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_sim/events", list_events)
    app.router.add_get("/_sim/operations", list_operations)
    app.router.add_post("/_sim/events/{event_id}/redeliver", redeliver_event)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_patch("/_sim/config", patch_config)
    return app


def _loggable_url(url: str) -> str:
    # Webhook URLs can carry credentials in the userinfo or query string; log only where it goes.
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def start(settings: SimulatorSettings) -> tuple[web.AppRunner, int]:
    """Start listening and return the runner (``await runner.cleanup()`` stops it) and the port.

    ``listen_port=0`` picks a free port, which is what tests use.
    """
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.listen_host, settings.listen_port).start()
    except BaseException:
        await runner.cleanup()
        raise
    port: int = runner.addresses[0][1]
    log.info(
        "simulator.started",
        name=settings.name,
        signature_format=settings.signature_format,
        host=settings.listen_host,
        port=port,
        webhook_url=_loggable_url(settings.webhook_url),
        settle_delay_ms=settings.settle_delay_ms,
    )
    if settings.uses_development_secret:
        log.warning("simulator.development_webhook_secret", env_var=settings.signing_key_variable)
    return runner, port


async def serve(settings: SimulatorSettings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever, until cancelled), then shut down gracefully."""
    runner, _ = await start(settings)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        log.info("simulator.stopping")
        await runner.cleanup()
        log.info("simulator.stopped")
