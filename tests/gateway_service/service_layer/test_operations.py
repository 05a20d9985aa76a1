"""Charge, payout and refund over the in-memory fakes: idempotency, failover between
providers, unknown outcomes, and reading an operation back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    IdempotencyConflict,
    NotFound,
    ValidationError,
)
from common.ids import new_id
from common.money import Money
from gateway_service.domain import events
from gateway_service.domain.breaker import BreakerState
from gateway_service.domain.model import (
    Operation,
    OperationKind,
    OperationStatus,
)
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderNotProcessed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.providers import ProviderRouter
from tests.gateway_service.conftest import (
    EUR_12_50,
    PAYMENT_METHOD,
    PRIMARY,
    SECONDARY,
    FakeDatabase,
    FakeProvider,
    charge,
    operation_facts,
    statuses,
)

# -- charge ------------------------------------------------------------------------------


async def test_an_accepted_charge_is_pending(
    service: GatewayService, fake_db: FakeDatabase, fake_provider: FakeProvider
) -> None:
    operation = await charge(service)

    assert operation.status is OperationStatus.PENDING
    assert operation.provider_reference == fake_provider.references["pay-1:charge"]
    assert fake_db.operations[operation.operation_id].status is OperationStatus.PENDING
    assert [h.status for h in fake_db.history[operation.operation_id]] == [
        OperationStatus.CREATED,
        OperationStatus.PENDING,
    ]
    # `charge.pending` is retired: the caller records `pending` from this answer.
    assert operation_facts(fake_db) == []


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
    # Announced unknown once; pending (once the provider answered) is announced to nobody.
    assert statuses(fake_db) == ["created"]
    assert fake_db.operations[first.operation_id].status is OperationStatus.PENDING


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
    assert len(fake_db.history[first.operation_id]) == 2


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

    found = await service.operations.get_operation(operation.operation_id)

    assert (found.operation_id, found.status) == (operation.operation_id, OperationStatus.PENDING)


async def test_get_operation_of_an_unknown_id_is_not_found(service: GatewayService) -> None:
    with pytest.raises(NotFound):
        await service.operations.get_operation(new_id())


async def test_get_operation_needs_a_uuid(service: GatewayService) -> None:
    with pytest.raises(ValidationError) as caught:
        await service.operations.get_operation("op-1")

    assert caught.value.violations[0].field == "operation_id"


# -- failover, payouts and refunds ------------------------------------------------------


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


@pytest.mark.parametrize(("primary_down", "taken_by"), [(False, PRIMARY), (True, SECONDARY)])
async def test_when_no_provider_can_take_it_nothing_moved_and_any_may_take_the_retry(
    service: GatewayService,
    router: ProviderRouter,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
    fake_db: FakeDatabase,
    primary_down: bool,
    taken_by: str,
) -> None:
    fake_provider.answers = [ProviderNotProcessed("down")] * 2
    secondary.answers = [ProviderNotProcessed("down")] * 2
    with pytest.raises(DependencyUnavailable, match="nothing was moved"):
        await charge(service)
    [stored] = fake_db.operations.values()
    # Every provider asked said it did not act: the retry may go to any of them.
    assert (stored.status, stored.outcome_unknown, stored.failover_clear) == (
        OperationStatus.CREATED,
        False,
        True,
    )
    if primary_down:
        trip(router)

    again = await charge(service)

    assert (again.status, again.provider) == (OperationStatus.PENDING, taken_by)


async def test_a_charge_whose_asker_gave_up_mid_call_never_goes_to_another_provider(
    service: GatewayService,
    router: ProviderRouter,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
    fake_db: FakeDatabase,
) -> None:
    # The first request ends while the provider holds the charge (its caller's deadline,
    # a crash, or the database gone as it records a timeout): nothing stored says it was
    # sent, yet the provider may still take it. Found by make chaos as a double charge.
    held = asyncio.Event()

    async def hold(_: Instruction) -> None:
        held.set()
        await asyncio.Event().wait()

    fake_provider.during_call = hold
    first = asyncio.create_task(charge(service))
    await held.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    fake_provider.during_call = None
    trip(router)  # the primary now refuses at once, as a paused or failing provider does

    with pytest.raises(DependencyUnavailable):
        await charge(service)

    assert secondary.calls == []
    [stored] = fake_db.operations.values()
    assert (stored.status, stored.provider, stored.failover_clear) == (
        OperationStatus.CREATED,
        PRIMARY,
        False,
    )


async def test_a_not_processed_answer_to_a_retry_does_not_clear_an_earlier_request(
    service: GatewayService,
    fake_provider: FakeProvider,
    secondary: FakeProvider,
    fake_db: FakeDatabase,
) -> None:
    fake_provider.answers = [ProviderTimeout("slow")]
    await charge(service)
    fake_provider.answers = [ProviderNotProcessed("down")] * 2

    with pytest.raises(DependencyUnavailable):
        await charge(service)

    [stored] = fake_db.operations.values()
    assert (stored.provider, stored.failover_clear) == (PRIMARY, False)
    assert secondary.calls == []


async def test_an_exhausted_deadline_asks_nobody(
    service: GatewayService, fake_provider: FakeProvider, secondary: FakeProvider
) -> None:
    with pytest.raises(DependencyUnavailable):
        await service.operations.charge(
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
    operation = await service.operations.payout(
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

    first = await service.operations.refund(
        idempotency_key="pay-1:refund-1",
        charge_operation_id=charged.operation_id,
        amount=Money(1000, "EUR"),
        reference="pay-1",
    )
    with pytest.raises(FailedPrecondition, match="exceed"):
        await service.operations.refund(
            idempotency_key="pay-1:refund-2",
            charge_operation_id=charged.operation_id,
            amount=Money(251, "EUR"),
            reference="pay-1",
        )
    trip(router)
    with pytest.raises(DependencyUnavailable):
        await service.operations.refund(
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
        await service.operations.refund(
            idempotency_key="r1",
            charge_operation_id=pending.operation_id,
            amount=Money(1, "EUR"),
            reference="pay-1",
        )
    fake_db.operations[pending.operation_id].status = OperationStatus.SUCCEEDED
    with pytest.raises(ValidationError):
        await service.operations.refund(
            idempotency_key="r1",
            charge_operation_id=pending.operation_id,
            amount=Money(1, "USD"),
            reference="pay-1",
        )
