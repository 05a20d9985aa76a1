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

from provider_simulator.delivery import WebhookSender
from provider_simulator.engine import IdempotencyKeyReused, Simulator
from provider_simulator.models import ChargeRequest
from provider_simulator.settings import SimulatorSettings

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


async def _parse_charge_request(request: web.Request) -> ChargeRequest:
    try:
        payload: Any = json.loads(await request.read())
    except ValueError:  # also UnicodeDecodeError
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        return ChargeRequest.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        code = "missing_field" if error["type"] == "missing" else "invalid_field"
        raise ApiError(400, code, error["msg"], field) from None


async def create_charge(request: web.Request) -> web.Response:
    charge_request = await _parse_charge_request(request)
    try:
        charge, created = request.app[SIMULATOR].create_charge(charge_request)
    except IdempotencyKeyReused:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "idempotency_key was already used with different charge parameters",
            "idempotency_key",
        ) from None
    if created:
        return web.json_response(charge.to_json(), status=202)
    # A replay returns the charge as it is now (possibly settled), which is what a client
    # retrying after a lost response needs to learn.
    return web.json_response(charge.to_json(), headers={"Idempotent-Replayed": "true"})


async def get_charge(request: web.Request) -> web.Response:
    charge = request.app[SIMULATOR].charges.get(request.match_info["charge_id"])
    if charge is None:
        raise ApiError(404, "charge_not_found", "no such charge")
    return web.json_response(charge.to_json())


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_events(request: web.Request) -> web.Response:
    events = [event.to_json() for event in request.app[SIMULATOR].events.values()]
    return web.json_response({"events": events})


async def redeliver_event(request: web.Request) -> web.Response:
    event = request.app[SIMULATOR].redeliver(request.match_info["event_id"])
    if event is None:
        raise ApiError(404, "event_not_found", "no such event")
    return web.json_response(event.to_json(), status=202)


async def _simulator_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(
            session,
            url=settings.webhook_url,
            secret=settings.webhook_secret,
            max_attempts=settings.webhook_max_attempts,
        )
        simulator = Simulator(sender, settle_delay_ms=settings.settle_delay_ms)
        app[SIMULATOR] = simulator
        yield
        # Before the session closes, so no delivery is cut off mid-request by a closed session.
        await simulator.close()


def create_app(settings: SimulatorSettings) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_simulator_context)
    app.router.add_post("/v1/charges", create_charge)
    app.router.add_get("/v1/charges/{charge_id}", get_charge)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_sim/events", list_events)
    app.router.add_post("/_sim/events/{event_id}/redeliver", redeliver_event)
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
        host=settings.listen_host,
        port=port,
        webhook_url=_loggable_url(settings.webhook_url),
        settle_delay_ms=settings.settle_delay_ms,
    )
    if settings.uses_development_secret:
        log.warning("simulator.development_webhook_secret", env_var="PAYSUITE_WEBHOOK_SECRET")
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
