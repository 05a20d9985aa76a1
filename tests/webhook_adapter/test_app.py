"""The webhook adapter on port 0, forwarding to a fake GatewayService on a real gRPC server."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
import stripe
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from common.config import ConfigError, Settings
from common.ports import free_port
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from provider_simulator.signing import stripe_signature
from tests.tokens import TEST_AUTH_SECRET
from webhook_adapter.app import create_app, start

# Deliberately not the development secret, so the tests prove the configured one is used.
TEST_SECRET = "whsec_" + base64.b64encode(b"gateway-webhook-test-secret").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else").decode()
STRIPE_SECRET = "whsec_stripe_format_test_secret"
CHARGE_ID = "ch_0123456789abcdef01234567"
OPERATION_ID = "0b4c7a40-3f4e-4b9a-9a55-9f1f8f0c1d2e"
MAX_BODY_BYTES = 64 * 1024
PRIMARY = "/webhooks/sim-primary"
SECONDARY = "/webhooks/sim-secondary"


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self) -> None:
        self.received: list[gateway_pb2.HandleProviderEventRequest] = []
        self.synced: list[gateway_pb2.SyncOperationRequest] = []
        self.fail_with: grpc.StatusCode | None = None

    async def SyncOperation(
        self,
        request: gateway_pb2.SyncOperationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.Operation:
        self.synced.append(request)
        return gateway_pb2.Operation(operation_id=request.operation_id)

    async def HandleProviderEvent(
        self,
        request: gateway_pb2.HandleProviderEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.HandleProviderEventResponse:
        if self.fail_with is not None:
            await context.abort(self.fail_with, f"scripted {self.fail_with.name.lower()}")
        first = all(r.provider_event_id != request.provider_event_id for r in self.received)
        self.received.append(request)
        return gateway_pb2.HandleProviderEventResponse(first_delivery=first, operation_id="op-1")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[FakeGateway, int]]:
    # Only HandleProviderEvent is served; the base class answers the rest UNIMPLEMENTED.
    fake = FakeGateway()  # type: ignore[abstract]  # serves one RPC; the base answers the rest UNIMPLEMENTED
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, port
    await server.stop(None)


def settings_for(gateway_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "gateway_target": f"127.0.0.1:{gateway_port}",
        "webhook_secret": SecretStr(TEST_SECRET),
        "provider_secondary_webhook_secret": SecretStr(STRIPE_SECRET),
        "rpc_timeout_ms": 2000,
        "auth_secret": SecretStr(TEST_AUTH_SECRET),
        **overrides,
    }
    return Settings(**values)


Post = Callable[..., Awaitable[tuple[int, Any]]]
StartWebhook = Callable[[Settings], Awaitable[Post]]


@pytest.fixture
async def start_webhook() -> AsyncIterator[StartWebhook]:
    """Starts adapters with `start()`; returns a poster for each; all stopped at teardown."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start_with(settings: Settings) -> Post:
        runner, port = await start(settings, "127.0.0.1:0")
        cleanups.append(runner.cleanup)
        client = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}")
        cleanups.append(client.close)

        async def post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            async with client.post(path, data=body, headers=headers) as response:
                return response.status, await response.json()

        return post

    yield start_with
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def post(start_webhook: StartWebhook, gateway: tuple[FakeGateway, int]) -> Post:
    return await start_webhook(settings_for(gateway[1]))


@pytest.fixture
def fake(gateway: tuple[FakeGateway, int]) -> FakeGateway:
    return gateway[0]


def event_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "evt_1",
        "type": "charge.failed",
        "created": 1_700_000_000,
        "data": {
            "charge_id": CHARGE_ID,
            "reference": OPERATION_ID,
            "amount_minor": 1250,
            "currency": "EUR",
            "status": "failed",
            "failure_reason": "card_declined",
        },
        **changes,
    }
    return json.dumps(body).encode()


def signed(
    body: bytes,
    *,
    secret: str = TEST_SECRET,
    msg_id: str = "evt_1",
    at: datetime | None = None,
) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


def stripe_signed(
    body: bytes, *, secret: str = STRIPE_SECRET, at: datetime | None = None
) -> dict[str, str]:
    timestamp = int((at or datetime.now(UTC)).timestamp())
    return {
        "content-type": "application/json",
        "stripe-signature": stripe_signature(secret, timestamp, body.decode()),
    }


async def test_a_signed_event_is_forwarded_and_accepted(post: Post, fake: FakeGateway) -> None:
    body = event_body()

    status, answer = await post(PRIMARY, body, signed(body))

    assert (status, answer) == (200, {"status": "accepted", "duplicate": False})
    [request] = fake.received
    assert (request.provider, request.provider_event_id, request.event_type) == (
        "sim-primary",
        "evt_1",
        "charge.failed",
    )
    assert (request.provider_reference, request.failure_reason) == (CHARGE_ID, "card_declined")
    assert request.occurred_at.seconds == 1_700_000_000
    assert request.raw_payload == body
    # Parsed here, so the gateway never re-parses the raw body inside its transaction.
    assert request.operation_id == OPERATION_ID
    assert (request.amount.amount_minor, request.amount.currency) == (1250, "EUR")


async def test_a_stripe_format_signature_is_accepted_for_the_stripe_provider(
    post: Post, fake: FakeGateway
) -> None:
    body = event_body(type="charge.succeeded")

    status, _ = await post(SECONDARY, body, stripe_signed(body))

    assert status == 200
    assert fake.received[0].provider == "sim-secondary"


async def test_each_provider_accepts_only_its_own_format(post: Post, fake: FakeGateway) -> None:
    body = event_body()

    assert (await post(SECONDARY, body, signed(body)))[0] == 401
    assert (await post(PRIMARY, body, stripe_signed(body, secret=TEST_SECRET)))[0] == 401
    assert fake.received == []


async def test_a_repeated_event_is_accepted_as_a_duplicate(post: Post, fake: FakeGateway) -> None:
    body = event_body(type="charge.succeeded")
    await post(PRIMARY, body, signed(body))

    status, answer = await post(PRIMARY, body, signed(body))

    assert (status, answer) == (200, {"status": "accepted", "duplicate": True})
    assert len(fake.received) == 2


@pytest.mark.parametrize("event_type", ["payout.paid", "charge.disputed", "refund"])
async def test_an_unknown_event_type_is_400(post: Post, fake: FakeGateway, event_type: str) -> None:
    body = event_body(type=event_type)

    status, answer = await post(PRIMARY, body, signed(body))

    assert status == 400
    assert answer["error"]["code"] == "unknown_event_type"
    assert fake.received == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param(
            lambda body: signed(body, secret=OTHER_SECRET), "invalid_signature", id="other-secret"
        ),
        pytest.param(
            lambda body: signed(event_body(id="evt_2")), "invalid_signature", id="tampered-body"
        ),
        pytest.param(
            lambda body: {**signed(body), "webhook-id": "evt_2"}, "invalid_signature", id="other-id"
        ),
        pytest.param(
            lambda body: signed(body, at=datetime.now(UTC) - timedelta(minutes=6)),
            "timestamp_out_of_tolerance",
            id="stale",
        ),
        pytest.param(
            lambda body: signed(body, at=datetime.now(UTC) + timedelta(minutes=6)),
            "timestamp_out_of_tolerance",
            id="future",
        ),
        pytest.param(
            lambda body: {**signed(body), "webhook-signature": "v1"},
            "invalid_signature",
            id="garbled-signature",
        ),
        pytest.param(
            lambda body: {k: v for k, v in signed(body).items() if k != "webhook-signature"},
            "missing_signature",
            id="unsigned",
        ),
        pytest.param(
            lambda body: {"content-type": "application/json"}, "missing_signature", id="no-headers"
        ),
    ],
)
async def test_a_bad_standard_signature_is_401_and_nothing_is_forwarded(
    post: Post, fake: FakeGateway, headers: Callable[[bytes], dict[str, str]], code: str
) -> None:
    body = event_body()

    status, answer = await post(PRIMARY, body, headers(body))

    assert status == 401
    assert answer["error"]["code"] == code
    assert fake.received == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param(
            lambda body: stripe_signed(body, secret="whsec_other"), "invalid_signature", id="secret"
        ),
        pytest.param(
            lambda body: stripe_signed(event_body(id="evt_9")), "invalid_signature", id="tampered"
        ),
        pytest.param(
            lambda body: stripe_signed(body, at=datetime.now(UTC) - timedelta(seconds=301)),
            "timestamp_out_of_tolerance",
            id="stale",
        ),
        pytest.param(
            lambda body: stripe_signed(body, at=datetime.now(UTC) + timedelta(seconds=330)),
            "timestamp_out_of_tolerance",
            id="future",
        ),
        pytest.param(
            lambda body: {"stripe-signature": "t=1,v0=abc"}, "missing_signature", id="no-v1"
        ),
        pytest.param(lambda body: {}, "missing_signature", id="missing"),
    ],
)
async def test_a_bad_stripe_signature_is_401_and_nothing_is_forwarded(
    post: Post, fake: FakeGateway, headers: Callable[[bytes], dict[str, str]], code: str
) -> None:
    body = event_body()

    status, answer = await post(SECONDARY, body, headers(body))

    assert status == 401
    assert answer["error"]["code"] == code
    assert fake.received == []


async def test_both_secrets_verify_during_a_rotation(
    start_webhook: StartWebhook, gateway: tuple[FakeGateway, int]
) -> None:
    fake, port = gateway
    post = await start_webhook(settings_for(port, webhook_previous_secret=SecretStr(OTHER_SECRET)))
    body = event_body()
    third = "whsec_" + base64.b64encode(b"a-third-secret").decode()

    assert (await post(PRIMARY, body, signed(body, secret=TEST_SECRET)))[0] == 200
    assert (await post(PRIMARY, body, signed(body, secret=OTHER_SECRET)))[0] == 200
    assert (await post(PRIMARY, body, signed(body, secret=third)))[0] == 401
    assert len(fake.received) == 2


async def test_a_body_that_is_not_utf8_is_401(post: Post, fake: FakeGateway) -> None:
    body = b"\xff\xfe"
    headers = {**signed(b"x"), "content-type": "application/json"}

    status, _ = await post(PRIMARY, body, headers)

    assert status == 401
    assert fake.received == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (event_body(id=""), "id"),
        (event_body(created="yesterday"), "created"),
        (event_body(data="ch_1"), "data"),
        (event_body(data={"failure_reason": None}), "data.id"),
        (event_body(data={"charge_id": 7}), "data.charge_id"),
        (
            event_body(data={"id": "ch_1", "amount_minor": 1.5, "currency": "EUR"}),
            "data.amount_minor",
        ),
        (event_body(data={"id": "ch_1", "amount_minor": 100}), "data.amount_minor"),
    ],
)
async def test_a_malformed_signed_body_is_400_with_the_field(
    post: Post, fake: FakeGateway, body: bytes, field: str
) -> None:
    status, answer = await post(PRIMARY, body, signed(body))

    assert status == 400
    assert answer["error"]["code"] == "malformed_payload"
    assert answer["error"]["field"] == field
    assert fake.received == []


async def test_an_unknown_provider_is_404(post: Post, fake: FakeGateway) -> None:
    body = event_body()

    status, answer = await post("/webhooks/acme", body, signed(body))

    assert status == 404
    assert answer["error"]["code"] == "unknown_provider"
    assert fake.received == []


async def test_a_body_over_the_limit_is_413(post: Post, fake: FakeGateway) -> None:
    body = event_body(padding="x" * MAX_BODY_BYTES)

    status, answer = await post(PRIMARY, body, signed(body))

    assert status == 413
    assert answer["error"]["code"] == "request_entity_too_large"
    assert fake.received == []


async def test_an_unverifiable_webhook_triggers_one_sync_of_the_operation_it_names(
    post: Post, fake: FakeGateway
) -> None:
    body = event_body()

    for _ in range(5):
        assert (await post(PRIMARY, body, signed(body, secret=OTHER_SECRET)))[0] == 401
    await asyncio.sleep(0.2)

    assert [(s.operation_id, s.trigger) for s in fake.synced] == [
        (OPERATION_ID, "unverified_webhook")
    ]
    assert fake.received == []


async def test_a_flood_of_unverifiable_webhooks_is_rate_limited(
    start_webhook: StartWebhook, gateway: tuple[FakeGateway, int]
) -> None:
    fake, port = gateway
    post = await start_webhook(settings_for(port, webhook_sync_per_s=3.0))

    for _ in range(30):
        data = {"id": "ch_1", "reference": str(uuid.uuid4())}
        body = event_body(data=data)
        assert (await post(PRIMARY, body, signed(body, secret=OTHER_SECRET)))[0] == 401
    await asyncio.sleep(0.2)

    # A burst of 3, plus what the bucket refilled while the 30 requests were sent.
    assert 3 <= len(fake.synced) <= 6


async def test_a_gateway_that_is_down_is_503(start_webhook: StartWebhook) -> None:
    post = await start_webhook(settings_for(free_port(), webhook_hold_ms=300))
    body = event_body()

    status, answer = await post(PRIMARY, body, signed(body))  # after holding it 0.3 s

    assert status == 503
    assert answer["error"]["code"] == "gateway_unavailable"


async def test_a_webhook_is_held_while_the_gateway_restarts_and_sent_when_it_is_back(
    start_webhook: StartWebhook,
) -> None:
    gateway_port = free_port()
    post = await start_webhook(settings_for(gateway_port, webhook_hold_ms=20_000))
    body = event_body()
    answer = asyncio.create_task(post(PRIMARY, body, signed(body)))
    await asyncio.sleep(0.5)  # the webhook arrived while nothing listened there
    assert not answer.done()

    fake = FakeGateway()  # type: ignore[abstract]  # serves one RPC; the base answers the rest UNIMPLEMENTED
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{gateway_port}")
    await server.start()
    try:
        status, _ = await answer
    finally:
        await server.stop(None)
    assert status == 200
    assert [r.provider_event_id for r in fake.received] == ["evt_1"]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.ABORTED, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503),
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 422),
        (grpc.StatusCode.INTERNAL, 502),
    ],
)
async def test_gateway_errors_map_to_what_the_provider_should_do(
    post: Post, fake: FakeGateway, code: grpc.StatusCode, status: int
) -> None:
    fake.fail_with = code
    body = event_body()

    got, answer = await post(PRIMARY, body, signed(body))

    assert got == status
    assert set(answer) == {"error"}
    if status in (400, 422):
        assert answer["error"]["code"] == code.name.lower()
        assert answer["error"]["message"] == f"scripted {code.name.lower()}"


async def _get(port: int, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_healthz_and_readyz() -> None:
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    gateway_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    runner, port = await start(settings_for(gateway_port), "127.0.0.1:0")
    try:
        assert await _get(port, "/healthz") == (200, {"status": "ok"})
        assert (await _get(port, "/readyz"))[0] == 503
        await health_servicer.set(
            "paysuite.gateway.v1.GatewayService", health_pb2.HealthCheckResponse.SERVING
        )
        assert await _get(port, "/readyz") == (200, {"status": "ready"})
    finally:
        await runner.cleanup()
        await server.stop(None)


class ExplodingStub:
    async def HandleProviderEvent(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")


async def test_an_unexpected_error_is_a_bare_503_so_the_provider_retries() -> None:
    app = create_app(settings_for(free_port()), ExplodingStub())  # type: ignore[arg-type]  # a stand-in that raises, not a real stub
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    body = event_body()
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                f"http://127.0.0.1:{port}{PRIMARY}", data=body, headers=signed(body)
            ) as response,
        ):
            assert response.status == 503
            answer = await response.json()
            assert answer["error"]["code"] == "internal"
            assert "secret" not in json.dumps(answer)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("secret", ["whsec_not*base64!", "whsec_"])
async def test_an_unusable_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ConfigError, match="PAYSUITE_WEBHOOK_SECRET") as caught:
        await start(settings_for(free_port(), webhook_secret=SecretStr(secret)), "127.0.0.1:0")

    assert secret not in str(caught.value)


async def test_the_public_development_secrets_are_refused_unless_allowed() -> None:
    settings = Settings(
        gateway_target=f"127.0.0.1:{free_port()}", auth_secret=SecretStr(TEST_AUTH_SECRET)
    )

    with pytest.raises(ConfigError, match="PAYSUITE_ALLOW_DEV_SECRETS"):
        await start(settings, "127.0.0.1:0")

    runner, _ = await start(settings.model_copy(update={"allow_dev_secrets": True}), "127.0.0.1:0")
    await runner.cleanup()


async def test_a_header_from_stripes_own_library_is_accepted(post: Post, fake: FakeGateway) -> None:
    body = event_body(type="charge.succeeded")
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)

    status, _ = await post(SECONDARY, body, {"stripe-signature": header})

    assert status == 200
    assert fake.received[0].provider == "sim-secondary"


class BatchingFakeGateway(FakeGateway):
    """Also serves HandleProviderEvents, answering each event as HandleProviderEvent would."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.item_codes: dict[str, grpc.StatusCode] = {}

    async def HandleProviderEvents(
        self,
        request: gateway_pb2.HandleProviderEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.HandleProviderEventsResponse:
        self.batches.append(len(request.events))
        results = []
        for event in request.events:
            code = self.item_codes.get(event.provider_event_id)
            if code is not None:
                results.append(
                    gateway_pb2.HandleProviderEventResult(code=code.value[0], message="scripted")
                )
                continue
            first = all(r.provider_event_id != event.provider_event_id for r in self.received)
            self.received.append(event)
            results.append(
                gateway_pb2.HandleProviderEventResult(
                    response=gateway_pb2.HandleProviderEventResponse(first_delivery=first)
                )
            )
        return gateway_pb2.HandleProviderEventsResponse(results=results)


@pytest.fixture
async def batching() -> AsyncIterator[tuple[BatchingFakeGateway, int]]:
    fake = BatchingFakeGateway()  # type: ignore[abstract]  # serves one RPC; the base answers the rest UNIMPLEMENTED
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, port
    await server.stop(None)


async def test_concurrent_webhooks_reach_the_gateway_in_batches_each_with_its_answer(
    start_webhook: StartWebhook, batching: tuple[BatchingFakeGateway, int]
) -> None:
    fake, port = batching
    post = await start_webhook(settings_for(port))
    fake.item_codes = {"evt_bad": grpc.StatusCode.INVALID_ARGUMENT}
    bodies = [event_body(id=f"evt_{i}") for i in range(20)] + [event_body(id="evt_bad")]

    answers = await asyncio.gather(
        *(post(PRIMARY, body, signed(body, msg_id=json.loads(body)["id"])) for body in bodies)
    )

    assert [status for status, _ in answers] == [200] * 20 + [400]
    assert answers[-1][1]["error"]["message"] == "scripted"
    assert sum(fake.batches) == 21
    assert len(fake.batches) < 21  # coalesced
    assert {r.provider_event_id for r in fake.received} == {f"evt_{i}" for i in range(20)}


async def test_every_receipt_is_counted_by_provider_and_result(
    post: Post, fake: FakeGateway
) -> None:
    def count(result: str, provider: str = "sim-primary") -> float:
        labels = {"provider": provider, "result": result}
        return REGISTRY.get_sample_value("webhook_receipts_total", labels) or 0.0

    results = ["accepted", "duplicate", "rejected_signature", "bad_request", "unavailable"]
    before = {result: count(result) for result in results}
    unknown_before = count("bad_request", provider="unknown")
    body = event_body(type="charge.succeeded")

    await post(PRIMARY, body, signed(body))
    await post(PRIMARY, body, signed(body))
    await post(PRIMARY, body, signed(body, secret=OTHER_SECRET))
    await post(PRIMARY, event_body(type="refund"), signed(event_body(type="refund")))
    fake.fail_with = grpc.StatusCode.UNAVAILABLE
    await post(PRIMARY, body, signed(body))
    await post("/webhooks/nobody-we-know", body, signed(body))

    assert {result: count(result) - before[result] for result in results} == dict.fromkeys(
        results, 1
    )
    assert count("bad_request", provider="unknown") - unknown_before == 1
