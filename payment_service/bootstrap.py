"""Wires the payment service: database, wallet and gateway clients, service layer, gRPC,
outbox relay, and the consumer of gateway events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from common import admission as admission_control
from common.backlog import Group
from common.bootstrap import LOOP_HEARTBEAT_S, Infra, ServiceDatabase
from common.config import Settings
from common.events import GATEWAY_STREAM, PAYMENT_SAGA_STREAM, PAYMENT_STREAM
from common.grpc.auth import authenticator
from common.grpc.client import create_channel
from common.grpc.server import ServiceRuntime, create_server
from common.supervision import Task
from common.tokens import ServiceToken
from payment_service.adapters.change_feed import PaymentChangeFeed
from payment_service.adapters.clients import GatewayClient, WalletClient
from payment_service.adapters.legacy_saga_group import LegacySagaGroup
from payment_service.adapters.uow import PaymentUnitOfWork
from payment_service.entrypoints.gateway_events import GROUP, GatewayEventsEntrypoint
from payment_service.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, PaymentServicer
from payment_service.entrypoints.housekeeping import Housekeeping, ReviewSlaAlarm, SagaResumer
from payment_service.entrypoints.payment_events import GROUP as SAGA_GROUP
from payment_service.entrypoints.payment_events import PaymentSagaEntrypoint
from payment_service.service_layer.accounts import AccountDirectory
from payment_service.service_layer.create import PaymentRequests
from payment_service.service_layer.handlers import GatewayEventHandlers
from payment_service.service_layer.queries import PaymentQueries
from payment_service.service_layer.recovery import Recovery
from payment_service.service_layer.reviews import ReviewService
from payment_service.service_layer.saga import Saga
from payment_service.service_layer.steps import Steps
from paysuite.payment.v1 import payment_pb2_grpc

NAME = "payment-service"
DATABASE = ServiceDatabase("payments", Path(__file__).parent / "adapters" / "migrations")


async def build(settings: Settings, address: str) -> ServiceRuntime:
    auth = authenticator(settings, POLICY)  # a missing key is a ConfigError before any connection
    token = ServiceToken(settings, NAME)
    infra = Infra.connect(settings, DATABASE)
    wallet_channel = create_channel(settings.wallet_target, token=token)
    gateway_channel = create_channel(settings.gateway_target, token=token)
    timeout_s = settings.rpc_timeout_ms / 1000
    wallet = WalletClient(wallet_channel, timeout_s=timeout_s)

    def uow() -> PaymentUnitOfWork:
        return PaymentUnitOfWork(infra.engine)

    gateway = GatewayClient(gateway_channel, timeout_s=timeout_s)
    # One directory for every use case: an account's owner and currency are looked up once.
    accounts = AccountDirectory(wallet)
    queries = PaymentQueries(uow=uow, accounts=accounts)
    # One group commit for both consumers' saga steps: a charge's steps and a credit's
    # completion that arrive together share a transaction.
    # The reads before a wallet call (`Steps.peek`) go through a small read-only engine.
    reader = infra.reader(pool_size=2)
    steps = Steps(uow, reader=lambda: PaymentUnitOfWork(reader))
    saga = Saga(uow=uow, wallet=wallet, gateway=gateway, queries=queries, steps=steps)
    requests = PaymentRequests(uow=uow, accounts=accounts, queries=queries, saga=saga)
    recovery = Recovery(uow=uow, gateway=gateway, saga=saga)
    consumer = infra.consumer(
        stream=GATEWAY_STREAM,
        group=GROUP,
        handler=GatewayEventsEntrypoint(GatewayEventHandlers(uow=uow, wallet=wallet, steps=steps)),
        handles=GatewayEventsEntrypoint.handles,
    )
    saga_consumer = infra.consumer(
        stream=PAYMENT_SAGA_STREAM,
        group=SAGA_GROUP,
        handler=PaymentSagaEntrypoint(saga),
        handles=PaymentSagaEntrypoint.handles,
    )
    housekeeping = Housekeeping(
        requests, key_retention=timedelta(hours=settings.idempotency_retention_h)
    )
    resumer = SagaResumer(recovery, after=timedelta(seconds=settings.saga_resume_after_s))
    feed = PaymentChangeFeed(
        infra.redis,
        streams=[settings.stream_prefix + s for s in (PAYMENT_STREAM, PAYMENT_SAGA_STREAM)],
        block_ms=settings.consumer_block_ms,
    )
    legacy_group = LegacySagaGroup(
        infra.redis, stream=settings.stream_prefix + PAYMENT_STREAM, group=SAGA_GROUP
    )
    reviews = ReviewService(uow=uow, wallet=wallet, sla=timedelta(seconds=settings.review_sla_s))
    alarm = ReviewSlaAlarm(reviews)
    admission, admission_tasks = admission_control.from_settings(
        settings,
        infra.redis,
        groups=[Group(c.stream, c.group) for c in (consumer, saga_consumer)],
    )
    servicer = PaymentServicer(
        requests=requests,
        queries=queries,
        recovery=recovery,
        reviews=reviews,
        feed=feed,
        admission=admission,
    )
    server, port, health = create_server(
        address,
        registrars=[lambda s: payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        auth=auth,
        max_connection_age_s=settings.grpc_max_connection_age_s,
    )

    async def close_channels() -> None:
        await wallet_channel.close()
        await gateway_channel.close()

    return ServiceRuntime(
        name=NAME,
        server=server,
        port=port,
        health=health,
        service_names=[SERVICE_NAME],
        readiness_checks=[infra.ping_database, infra.ping_redis],
        progress_checks=[infra.outbox_progress()],
        background=[
            # Read by plain XREAD (the watch feed, outside subscribers), by no group of ours.
            infra.relay_task(broadcast=[PAYMENT_STREAM]),
            infra.consumer_task(consumer),
            infra.consumer_task(saga_consumer),
            Task("idempotency key purge", housekeeping.run, heartbeat_s=housekeeping.heartbeat_s),
            Task("saga resume sweep", resumer.run, heartbeat_s=resumer.heartbeat_s),
            Task("review SLA alarm", alarm.run, heartbeat_s=alarm.heartbeat_s),
            Task("watch feed", feed.run, heartbeat_s=LOOP_HEARTBEAT_S),
            Task(
                "legacy saga group retirement",
                legacy_group.run,
                heartbeat_s=legacy_group.every_s + LOOP_HEARTBEAT_S,
            ),
            *admission_tasks,
        ],
        closers=[infra.close, close_channels],
    )
