from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from common.errors import IdempotencyConflict, NotFound, ValidationError
from common.ids import new_id
from common.money import Money
from gateway_service.domain import events
from gateway_service.domain.model import (
    Operation,
    OperationStatus,
    ProviderEventStatus,
)
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from gateway_service.service_layer.services import GatewayService, ProviderEventReceipt
from tests.gateway_service.conftest import (
    EUR_12_50,
    PAYMENT_METHOD,
    PRIMARY,
    FakeDatabase,
    FakeProvider,
    charge,
    provider_event_body,
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
    return await service.handle_provider_event(
        provider=PRIMARY,
        provider_event_id=event_id,
        event_type=event_type,
        provider_reference=charge_id,
        failure_reason=failure_reason,
        occurred_at=datetime(2024, 1, 1, tzinfo=UTC),
        raw_payload=provider_event_body(charge_id, op_id, event_type),
        operation_id=op_id,
    )


def operation_facts(fake_db: FakeDatabase) -> list[events.OperationFact]:
    return [e for e in fake_db.published if isinstance(e, events.OperationFact)]


def statuses(fake_db: FakeDatabase) -> list[str]:
    return [e.status for e in operation_facts(fake_db)]


# -- charge ------------------------------------------------------------------------------


async def test_an_accepted_charge_is_pending(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    operation = await charge(service)

    assert operation.status is OperationStatus.PENDING
    assert operation.provider_reference == fake_provider.references["pay-1:charge"]
    assert fake_db.operations[operation.operation_id].status is OperationStatus.PENDING
    [event] = operation_facts(fake_db)
    assert isinstance(event, events.OperationStatusChanged)
    assert (event.status, event.operation_id, event.reference) == (
        "pending",
        operation.operation_id,
        "pay-1",
    )


async def test_the_provider_is_asked_with_our_key_and_operation_id(
    service: GatewayService, fake_provider: FakeProvider
) -> None:
    operation = await charge(service)

    assert fake_provider.calls == [
        Instruction(
            kind=InstructionKind.CHARGE,
            idempotency_key="pay-1:charge",
            amount=EUR_12_50,
            instrument=PAYMENT_METHOD,
            reference=operation.operation_id,
        )
    ]


async def test_a_rejected_charge_fails_with_the_providers_code(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    fake_provider.answers = [ProviderRejected("idempotency_key_reused", "different parameters")]

    operation = await charge(service)

    assert (operation.status, operation.failure_reason) == (
        OperationStatus.FAILED,
        "idempotency_key_reused",
    )
    assert statuses(fake_db) == ["failed"]


@pytest.mark.parametrize(
    "errors",
    [[ProviderTimeout("slow")], [ProviderUnavailable("down"), ProviderUnavailable("down")]],
    ids=["timeout", "down"],
)
async def test_an_unanswered_charge_stays_created_with_an_unknown_outcome(
    service: GatewayService,
    fake_db: FakeDatabase,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
    errors: list[Exception],
) -> None:
    fake_provider.answers = list(errors)

    operation = await charge(service)

    assert (operation.status, operation.outcome_unknown) == (OperationStatus.CREATED, True)
    assert fake_db.operations[operation.operation_id].outcome_unknown
    [unknown] = operation_facts(fake_db)
    assert isinstance(unknown, events.OperationOutcomeUnknown)
    # The primary may have charged: the secondary is never asked.
    assert secondary.calls == []
    # A timeout is never retried; an unknown 5xx is, with the same key.
    assert len(fake_provider.calls) == len(errors)


async def test_retrying_an_unanswered_charge_asks_the_provider_again_with_the_same_key(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    fake_provider.answers = [ProviderTimeout("slow")]
    first = await charge(service)

    second = await charge(service)

    assert second.operation_id == first.operation_id
    assert second.status is OperationStatus.PENDING
    assert [c.idempotency_key for c in fake_provider.calls] == ["pay-1:charge", "pay-1:charge"]
    assert {c.reference for c in fake_provider.calls} == {first.operation_id}
    # Announced unknown once, then pending once the provider answered.
    assert statuses(fake_db) == ["created", "pending"]


async def test_replaying_an_answered_charge_returns_it_without_asking_again(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    first = await charge(service)

    again = await charge(service)

    assert (again.operation_id, again.status, again.version) == (
        first.operation_id,
        OperationStatus.PENDING,
        first.version,
    )
    assert len(fake_provider.calls) == 1
    assert statuses(fake_db) == ["pending"]


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": Money(999, "EUR")},
        {"amount": Money(1250, "USD")},
        {"payment_method": "pm_card_declined"},
        {"reference": "pay-2"},
    ],
    ids=["amount", "currency", "payment_method", "reference"],
)
async def test_reusing_a_key_for_another_charge_conflicts(
    service: GatewayService, fake_provider: FakeProvider, changes: dict[str, Any]
) -> None:
    await charge(service)

    with pytest.raises(IdempotencyConflict) as caught:
        await charge(service, **changes)

    assert PAYMENT_METHOD not in caught.value.message
    assert len(fake_provider.calls) == 1


async def test_losing_the_insert_race_answers_as_a_replay(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    winner = Operation.charge(
        idempotency_key="pay-1:charge",
        amount=EUR_12_50,
        payment_method=PAYMENT_METHOD,
        reference="pay-1",
        provider=PRIMARY,
    )
    fake_db.racing_insert = winner

    operation = await charge(service)

    assert operation.operation_id == winner.operation_id
    assert len(fake_db.operations) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"reference": ""}, "reference"),
        ({"payment_method": ""}, "payment_method"),
    ],
)
async def test_charge_requests_are_validated(
    service: GatewayService, fake_provider: FakeProvider, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await charge(service, **changes)

    assert [v.field for v in caught.value.violations] == [field]
    assert fake_provider.calls == []


async def test_get_operation_returns_the_stored_operation(service: GatewayService) -> None:
    operation = await charge(service)

    found = await service.get_operation(operation.operation_id)

    assert (found.operation_id, found.status) == (operation.operation_id, OperationStatus.PENDING)


async def test_get_operation_of_an_unknown_id_is_not_found(service: GatewayService) -> None:
    with pytest.raises(NotFound):
        await service.get_operation(new_id())


async def test_get_operation_needs_a_uuid(service: GatewayService) -> None:
    with pytest.raises(ValidationError) as caught:
        await service.get_operation("op-1")

    assert caught.value.violations[0].field == "operation_id"


# -- provider events ---------------------------------------------------------------------


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
    assert statuses(fake_db) == ["pending", "succeeded"]
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
    assert statuses(fake_db) == ["pending", "succeeded"]


async def test_another_event_with_the_same_outcome_is_a_duplicate(
    service: GatewayService, fake_db: FakeDatabase
) -> None:
    operation = await charge(service)
    await deliver(service, operation)

    receipt = await deliver(service, operation, event_id="evt_2")

    assert receipt.status is ProviderEventStatus.DUPLICATE_OUTCOME
    assert statuses(fake_db) == ["pending", "succeeded"]


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
        await service.handle_provider_event(**request)

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
    assert statuses(fake_db) == ["pending", "succeeded"]
    received = [e for e in fake_db.published if isinstance(e, events.WebhookRecorded)]
    assert len(received) == 3
