"""Provider events over the in-memory fakes: recorded once, applied to the operation they
name, kept when they match nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from common.errors import (
    ValidationError,
)
from common.ids import new_id
from gateway_service.domain import events
from gateway_service.domain.model import (
    Operation,
    OperationStatus,
    ProviderEventStatus,
)
from gateway_service.domain.provider import (
    Instruction,
)
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.inbox import ProviderEventReceipt
from tests.gateway_service.conftest import (
    PRIMARY,
    FakeDatabase,
    FakeProvider,
    charge,
    operation_facts,
    provider_event_body,
    statuses,
)


async def deliver(
    service: GatewayService,
    operation: Operation | None = None,
    *,
    event_id: str = "evt_1",
    event_type: str = "charge.succeeded",
    provider_reference: str | None = None,
    failure_reason: str = "",
    reference: str | None = None,
) -> ProviderEventReceipt:
    charge_id = provider_reference
    if charge_id is None:
        assert operation is not None
        charge_id = operation.provider_reference or ""
    op_id = reference if reference is not None else (operation.operation_id if operation else "")
    return await service.inbox.handle_provider_event(
        provider=PRIMARY,
        provider_event_id=event_id,
        event_type=event_type,
        provider_reference=charge_id,
        failure_reason=failure_reason,
        occurred_at=datetime(2024, 1, 1, tzinfo=UTC),
        raw_payload=provider_event_body(charge_id, op_id, event_type),
        operation_id=op_id,
    )


async def test_a_provider_outcome_settles_the_operation(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    receipt = await deliver(service, operation, event_type="charge.succeeded")

    assert receipt == ProviderEventReceipt(
        first_delivery=True,
        operation_id=operation.operation_id,
        status=ProviderEventStatus.APPLIED,
    )
    assert fake_db.operations[operation.operation_id].status is OperationStatus.SUCCEEDED
    assert statuses(fake_db) == ["succeeded"]
    assert operation_facts(fake_db)[-1].causation_id == "evt_1"
    stored = fake_db.provider_events[(PRIMARY, "evt_1")]
    assert (stored.operation_id, stored.status) == (
        operation.operation_id,
        ProviderEventStatus.APPLIED,
    )


async def test_a_failed_charge_keeps_the_providers_reason(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    await deliver(service, operation, event_type="charge.failed", failure_reason="card_declined")

    stored = fake_db.operations[operation.operation_id]
    assert (stored.status, stored.failure_reason) == (OperationStatus.FAILED, "card_declined")
    assert operation_facts(fake_db)[-1].failure_reason == "card_declined"


async def test_a_repeated_delivery_changes_nothing(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)
    await deliver(service, operation)

    again = await deliver(service, operation, event_type="charge.failed")

    assert again == ProviderEventReceipt(
        first_delivery=False, operation_id=operation.operation_id, status=None
    )
    assert fake_db.operations[operation.operation_id].status is OperationStatus.SUCCEEDED
    assert statuses(fake_db) == ["succeeded"]


async def test_another_event_with_the_same_outcome_is_a_duplicate(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)
    await deliver(service, operation)

    receipt = await deliver(service, operation, event_id="evt_2")

    assert receipt.status is ProviderEventStatus.DUPLICATE_OUTCOME
    assert statuses(fake_db) == ["succeeded"]


async def test_a_contradicting_event_is_a_conflict_not_an_overwrite(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)
    await deliver(service, operation)

    receipt = await deliver(
        service, operation, event_id="evt_2", event_type="charge.failed", failure_reason="fraud"
    )

    assert receipt.status is ProviderEventStatus.CONFLICT
    assert fake_db.operations[operation.operation_id].status is OperationStatus.SUCCEEDED
    conflict = operation_facts(fake_db)[-1]
    assert isinstance(conflict, events.ContradictingOutcomeReceived)
    assert (conflict.status, conflict.causation_id) == ("failed", "evt_2")
    assert fake_db.provider_events[(PRIMARY, "evt_2")].status is ProviderEventStatus.CONFLICT


async def test_an_event_for_an_unknown_charge_is_kept_as_unmatched(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    receipt = await deliver(service, provider_reference="ch_nobody", reference=new_id())

    assert receipt == ProviderEventReceipt(
        first_delivery=True, operation_id=None, status=ProviderEventStatus.UNMATCHED
    )
    stored = fake_db.provider_events[(PRIMARY, "evt_1")]
    assert stored.status is ProviderEventStatus.UNMATCHED
    assert stored.event.raw_payload
    assert operation_facts(fake_db) == []
    [received] = fake_db.published
    assert isinstance(received, events.WebhookRecorded)
    assert received.outcome == "unmatched"


async def test_an_unknown_event_type_is_recorded_and_ignored(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    receipt = await deliver(service, operation, event_type="charge.disputed")

    assert receipt.status is ProviderEventStatus.IGNORED
    assert fake_db.provider_events[(PRIMARY, "evt_1")].status is ProviderEventStatus.IGNORED
    assert fake_db.operations[operation.operation_id].status is OperationStatus.PENDING


async def test_a_webhook_overtaking_the_pending_commit_still_settles_the_operation(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    receipts: list[ProviderEventReceipt] = []

    async def webhook_first(instruction: Instruction) -> None:
        # The provider settles and calls back before answering our request.
        receipts.append(
            await deliver(
                service,
                provider_reference=fake_provider.references[instruction.idempotency_key],
                reference=instruction.reference,
            )
        )

    fake_provider.during_call = webhook_first

    operation = await charge(service)

    assert receipts[0].status is ProviderEventStatus.APPLIED
    assert operation.status is OperationStatus.SUCCEEDED
    assert (
        fake_db.operations[operation.operation_id].provider_reference
        == (fake_provider.references["pay-1:charge"])
    )
    # Straight from created to succeeded; the late answer did not go back to pending.
    assert statuses(fake_db) == ["succeeded"]


async def test_an_echoed_reference_with_another_charge_is_a_mismatch_not_applied(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    receipt = await deliver(
        service, provider_reference="ch_other", reference=operation.operation_id
    )

    assert receipt.status is ProviderEventStatus.MISMATCH
    assert fake_db.operations[operation.operation_id].status is OperationStatus.PENDING
    assert isinstance(operation_facts(fake_db)[-1], events.ProviderReportMismatched)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"provider": "acme"}, "provider"),
        ({"provider": ""}, "provider"),
        ({"provider_event_id": ""}, "provider_event_id"),
        ({"event_type": ""}, "event_type"),
    ],
)
async def test_provider_events_are_validated(
    service: GatewayService, fake_db: FakeDatabase, changes: dict[str, Any], field: str
) -> None:
    request: dict[str, Any] = {
        "provider": PRIMARY,
        "provider_event_id": "evt_1",
        "event_type": "charge.succeeded",
        "provider_reference": "ch_1",
        "failure_reason": "",
        "occurred_at": None,
        "raw_payload": b"{}",
        **changes,
    }
    with pytest.raises(ValidationError) as caught:
        await service.inbox.handle_provider_event(**request)

    assert caught.value.violations[0].field == field
    assert fake_db.provider_events == {}


async def test_concurrent_deliveries_are_recorded_in_one_batch_and_applied_once(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)

    receipts = await asyncio.gather(
        *(deliver(service, operation) for _ in range(5)),
        deliver(service, operation, event_id="evt_2"),
        deliver(service, provider_reference="ch_nobody", reference=new_id(), event_id="evt_3"),
    )

    assert [r.first_delivery for r in receipts] == [True, False, False, False, False, True, True]
    assert [r.status for r in receipts[5:]] == [
        ProviderEventStatus.DUPLICATE_OUTCOME,
        ProviderEventStatus.UNMATCHED,
    ]
    assert statuses(fake_db) == ["succeeded"]
    # webhook.received only for the first deliveries that moved nothing: the applied one is
    # told by charge.succeeded.
    received = [e for e in fake_db.published if isinstance(e, events.WebhookRecorded)]
    assert sorted(e.outcome for e in received) == ["duplicate_outcome", "unmatched"]
