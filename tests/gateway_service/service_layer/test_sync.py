"""SyncOperation over the in-memory fakes: the provider's answer, applied as a webhook's."""

from __future__ import annotations

import pytest

from common.errors import (
    DependencyUnavailable,
)
from common.money import Money
from gateway_service.domain import events
from gateway_service.domain.model import (
    OperationStatus,
)
from gateway_service.domain.provider import (
    ProviderTimeout,
    ReportedStatus,
    StatusReport,
)
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.providers import ProviderRouter
from tests.gateway_service.conftest import (
    EUR_12_50,
    FakeDatabase,
    FakeProvider,
    FakeUnitOfWork,
    charge,
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

    synced = await service.sync.sync_operation(unknown.operation_id)

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

    synced = await service.sync.sync_operation(operation.operation_id)

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

    synced = await service.sync.sync_operation(unknown.operation_id)

    assert synced.status is OperationStatus.CREATED


async def test_a_sync_triggered_by_an_unverified_webhook_records_it(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    await service.sync.sync_operation(operation.operation_id, trigger="unverified_webhook")

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
        await service.sync.sync_operation(operation.operation_id)
