"""Failover, unknown outcomes, payouts, refunds and SyncOperation over the in-memory fakes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from common.errors import DependencyUnavailable, FailedPrecondition, ValidationError
from common.money import Money
from gateway_service.domain import events
from gateway_service.domain.model import Operation, OperationKind, OperationStatus
from gateway_service.domain.provider import (
    ProviderNotProcessed,
    ProviderTimeout,
    ProviderUnavailable,
    ReportedStatus,
    StatusReport,
)
from gateway_service.service_layer.breaker import BreakerState
from gateway_service.service_layer.providers import ProviderRouter
from gateway_service.service_layer.services import GatewayService
from tests.gateway_service.conftest import (
    EUR_12_50,
    PRIMARY,
    SECONDARY,
    FakeDatabase,
    FakeProvider,
    FakeUnitOfWork,
    charge,
    guarded,
)


def trip(router: ProviderRouter) -> None:
    breaker = router.get(PRIMARY).breaker
    while (permit := breaker.acquire()) is not None:
        breaker.record(permit, failed=True)
    assert breaker.state is BreakerState.OPEN


async def test_an_open_breaker_sends_new_charges_to_the_secondary(
    service: GatewayService,
    router: ProviderRouter,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
    fake_db: FakeDatabase,
) -> None:
    trip(router)

    operation = await charge(service)

    assert (operation.status, operation.provider) == (OperationStatus.PENDING, SECONDARY)
    assert fake_provider.calls == []
    assert [c.idempotency_key for c in secondary.calls] == ["pay-1:charge"]
    history = fake_db.history[operation.operation_id]
    assert [(h.status, h.provider) for h in history] == [
        (OperationStatus.CREATED, PRIMARY),
        (OperationStatus.CREATED, SECONDARY),
        (OperationStatus.PENDING, SECONDARY),
    ]


async def test_an_explicit_not_processed_answer_fails_over_after_retrying(
    service: GatewayService, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    fake_provider.answers = [ProviderNotProcessed("503"), ProviderNotProcessed("503")]

    operation = await charge(service)

    assert operation.provider == SECONDARY
    assert len(fake_provider.calls) == 2  # retried with the same key before giving up
    assert {c.idempotency_key for c in fake_provider.calls} == {"pay-1:charge"}
    assert len(secondary.calls) == 1


async def test_not_processed_after_a_possibly_processed_attempt_stays_unknown(
    service: GatewayService, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    fake_provider.answers = [ProviderUnavailable("500"), ProviderNotProcessed("503")]

    operation = await charge(service)

    assert (operation.provider, operation.outcome_unknown) == (PRIMARY, True)
    assert secondary.calls == []


async def test_an_unknown_charge_is_never_sent_to_another_provider(
    service: GatewayService,
    router: ProviderRouter,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
) -> None:
    fake_provider.answers = [ProviderTimeout("slow")]
    await charge(service)
    trip(router)

    with pytest.raises(DependencyUnavailable):
        await charge(service)

    assert secondary.calls == []
    assert len(fake_provider.calls) == 1


async def test_when_no_provider_can_take_it_nothing_moved_and_it_may_be_retried(
    service: GatewayService,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
    fake_db: FakeDatabase,
) -> None:
    fake_provider.answers = [ProviderNotProcessed("down")] * 2
    secondary.answers = [ProviderNotProcessed("down")] * 2

    with pytest.raises(DependencyUnavailable, match="nothing was moved"):
        await charge(service)
    [stored] = fake_db.operations.values()
    assert (stored.status, stored.outcome_unknown) == (OperationStatus.CREATED, False)

    again = await charge(service)

    assert (again.status, again.provider) == (OperationStatus.PENDING, PRIMARY)


async def test_an_exhausted_deadline_asks_nobody(
    service: GatewayService, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    with pytest.raises(DependencyUnavailable):
        await service.charge(
            idempotency_key="pay-1:charge",
            amount=EUR_12_50,
            payment_method="pm_card_visa",
            reference="pay-1",
            deadline=time.monotonic() - 1,
        )

    assert fake_provider.calls == secondary.calls == []


async def test_a_payout_is_pending_at_the_provider(
    service: GatewayService, fake_provider: FakeProvider
) -> None:
    operation = await service.payout(
        idempotency_key="pay-2:payout", amount=EUR_12_50, destination="acct_1", reference="pay-2"
    )

    assert (operation.kind, operation.status) == (OperationKind.PAYOUT, OperationStatus.PENDING)
    assert fake_provider.calls[0].instrument == "acct_1"


async def _succeeded_charge(service: GatewayService, fake_db: FakeDatabase) -> Operation:
    operation = await charge(service)
    stored = fake_db.operations[operation.operation_id]
    stored.status = OperationStatus.SUCCEEDED
    return stored


async def test_a_refund_goes_to_the_charges_provider_and_never_beyond_the_charge(
    service: GatewayService,
    router: ProviderRouter,
    fake_db: FakeDatabase,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
) -> None:
    charged = await _succeeded_charge(service, fake_db)

    first = await service.refund(
        idempotency_key="pay-1:refund-1",
        charge_operation_id=charged.operation_id,
        amount=Money(1000, "EUR"),
        reference="pay-1",
    )
    with pytest.raises(FailedPrecondition, match="exceed"):
        await service.refund(
            idempotency_key="pay-1:refund-2",
            charge_operation_id=charged.operation_id,
            amount=Money(251, "EUR"),
            reference="pay-1",
        )
    trip(router)
    with pytest.raises(DependencyUnavailable):
        await service.refund(
            idempotency_key="pay-1:refund-3",
            charge_operation_id=charged.operation_id,
            amount=Money(250, "EUR"),
            reference="pay-1",
        )

    assert (first.status, first.parent_operation_id) == (
        OperationStatus.PENDING,
        charged.operation_id,
    )
    assert fake_provider.calls[-1].instrument == charged.provider_reference
    assert secondary.calls == []


async def test_a_refund_needs_a_succeeded_charge_in_its_currency(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    pending = await charge(service)
    with pytest.raises(FailedPrecondition):
        await service.refund(
            idempotency_key="r1",
            charge_operation_id=pending.operation_id,
            amount=Money(1, "EUR"),
            reference="pay-1",
        )
    fake_db.operations[pending.operation_id].status = OperationStatus.SUCCEEDED
    with pytest.raises(ValidationError):
        await service.refund(
            idempotency_key="r1",
            charge_operation_id=pending.operation_id,
            amount=Money(1, "USD"),
            reference="pay-1",
        )


@pytest.mark.parametrize(
    ("report", "status"),
    [
        (StatusReport(ReportedStatus.SUCCEEDED, "ch_x", "", EUR_12_50), OperationStatus.SUCCEEDED),
        (
            StatusReport(ReportedStatus.FAILED, "ch_x", "card_declined", EUR_12_50),
            OperationStatus.FAILED,
        ),
        (StatusReport(ReportedStatus.PENDING, "ch_x", "", EUR_12_50), OperationStatus.PENDING),
        (StatusReport(ReportedStatus.NOT_FOUND), OperationStatus.FAILED),
    ],
)
async def test_sync_resolves_an_unknown_outcome_with_the_providers_answer(
    service: GatewayService,
    fake_provider: FakeProvider,
    fake_db: FakeDatabase,
    report: StatusReport,
    status: OperationStatus,
) -> None:
    fake_provider.answers = [ProviderTimeout("slow")]
    unknown = await charge(service)
    fake_provider.status_answers = [report]

    synced = await service.sync_operation(unknown.operation_id)

    assert synced.status is status
    assert not synced.outcome_unknown  # the provider has answered
    if report.status is ReportedStatus.NOT_FOUND:
        assert synced.failure_reason == "not_processed_by_provider"


async def test_a_sync_answer_for_another_amount_is_a_mismatch_not_applied(
    service: GatewayService, fake_provider: FakeProvider, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)
    fake_provider.status_answers = [
        StatusReport(
            ReportedStatus.SUCCEEDED, operation.provider_reference or "", "", Money(1, "EUR")
        )
    ]

    synced = await service.sync_operation(operation.operation_id)

    assert synced.status is OperationStatus.PENDING
    assert isinstance(fake_db.published[-1], events.ProviderReportMismatched)


async def test_a_sync_of_a_young_operation_the_provider_never_saw_waits(
    fake_db: FakeDatabase, router: ProviderRouter, fake_provider: FakeProvider
) -> None:
    service = GatewayService(
        uow=lambda: FakeUnitOfWork(fake_db), providers=router, sync_not_found_grace_s=60
    )
    fake_provider.answers = [ProviderTimeout("slow")]
    unknown = await charge(service)
    fake_provider.status_answers = [StatusReport(ReportedStatus.NOT_FOUND)]

    synced = await service.sync_operation(unknown.operation_id)

    assert synced.status is OperationStatus.CREATED


async def test_a_sync_triggered_by_an_unverified_webhook_records_it(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    await service.sync_operation(operation.operation_id, trigger="unverified_webhook")

    rejected = [e for e in fake_db.published if isinstance(e, events.WebhookRejected)]
    assert [(r.operation_id, r.outcome) for r in rejected] == [
        (operation.operation_id, "invalid_signature")
    ]


async def test_a_sync_the_provider_cannot_answer_is_dependency_unavailable(
    service: GatewayService, fake_provider: FakeProvider
) -> None:
    operation = await charge(service)
    fake_provider.status_answers = [ProviderTimeout("slow")]

    with pytest.raises(DependencyUnavailable):
        await service.sync_operation(operation.operation_id)


async def test_breaker_transitions_are_published_as_events(
    fake_db: FakeDatabase, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    service_ref: list[GatewayService] = []
    primary = guarded(fake_provider, minimum_calls=2)
    router = ProviderRouter([primary, guarded(secondary)])
    service = GatewayService(uow=lambda: FakeUnitOfWork(fake_db), providers=router)
    service_ref.append(service)
    primary.breaker._on_transition = service.on_breaker_transition
    stop = asyncio.Event()
    publisher = asyncio.create_task(service.publish_breaker_transitions(stop))
    fake_provider.answers = [ProviderNotProcessed("503")] * 2

    await charge(service)
    await asyncio.sleep(0.01)
    stop.set()
    publisher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publisher

    [opened] = [e for e in fake_db.published if isinstance(e, events.CircuitBreakerStateChanged)]
    assert (opened.provider, opened.from_state, opened.to_state) == (PRIMARY, "closed", "open")
