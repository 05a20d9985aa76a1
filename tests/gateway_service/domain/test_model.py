from __future__ import annotations

import dataclasses

import pytest

from gateway_service.domain import events
from gateway_service.domain.model import (
    UNSPECIFIED_FAILURE,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEventStatus,
)
from tests.gateway_service.conftest import EUR_12_50, PAYMENT_METHOD

SUCCEEDED = OperationStatus.SUCCEEDED
FAILED = OperationStatus.FAILED


def new_charge() -> Operation:
    return Operation.charge(
        idempotency_key="pay-1:charge",
        amount=EUR_12_50,
        payment_method=PAYMENT_METHOD,
        reference="pay-1",
        provider="simulator",
    )


def pending_charge() -> Operation:
    operation = new_charge()
    operation.mark_accepted("ch_1")
    operation.pull_events()
    return operation


def outcome(
    operation: Operation,
    status: OperationStatus,
    *,
    event_id: str = "evt_1",
    reason: str = "",
    kind: OperationKind = OperationKind.CHARGE,
) -> ProviderEventStatus:
    return operation.apply_provider_outcome(
        kind=kind,
        outcome=status,
        failure_reason=reason,
        provider_event_id=event_id,
        provider_reference="ch_1",
    )


def test_a_new_charge_is_created_and_emits_nothing() -> None:
    operation = new_charge()

    assert operation.status is OperationStatus.CREATED
    assert operation.kind is OperationKind.CHARGE
    assert operation.version == 1
    assert operation.provider_reference is None
    assert operation.pull_events() == []


def test_the_payment_method_stays_out_of_repr() -> None:
    assert PAYMENT_METHOD not in repr(new_charge())


def test_accepted_moves_to_pending_and_announces_only_the_outcome() -> None:
    operation = new_charge()

    assert operation.mark_accepted("ch_1") is True

    assert (operation.status, operation.provider_reference, operation.version) == (
        OperationStatus.PENDING,
        "ch_1",
        2,
    )
    # Nobody acts on `pending` (the caller records it from the gateway's answer).
    assert operation.pull_events() == []
    operation.apply_provider_outcome(
        kind=OperationKind.CHARGE,
        outcome=OperationStatus.SUCCEEDED,
        failure_reason="",
        provider_event_id="evt_1",
        provider_reference="ch_1",
    )
    [event] = operation.pull_events()
    assert isinstance(event, events.OperationStatusChanged)
    assert (event.status, event.kind, event.version) == ("succeeded", "charge", 3)
    assert (event.provider_reference, event.reference, event.causation_id) == (
        "ch_1",
        "pay-1",
        "evt_1",
    )
    assert not hasattr(event, "payment_method")


def test_accepting_twice_changes_nothing() -> None:
    operation = pending_charge()

    assert operation.mark_accepted("ch_1") is False
    assert operation.version == 2
    assert operation.pull_events() == []


def test_a_rejected_request_fails_with_the_providers_code() -> None:
    operation = new_charge()

    assert operation.mark_rejected("invalid_field") is True

    assert (operation.status, operation.failure_reason) == (FAILED, "invalid_field")
    [event] = operation.pull_events()
    assert (event.status, event.failure_reason) == ("failed", "invalid_field")


def test_a_rejection_after_acceptance_changes_nothing() -> None:
    operation = pending_charge()

    assert operation.mark_rejected("invalid_field") is False
    assert operation.status is OperationStatus.PENDING


@pytest.mark.parametrize(("status", "reason"), [(SUCCEEDED, ""), (FAILED, "card_declined")])
def test_a_provider_outcome_settles_a_pending_operation(
    status: OperationStatus, reason: str
) -> None:
    operation = pending_charge()

    assert outcome(operation, status, reason=reason) is ProviderEventStatus.APPLIED

    assert operation.status is status
    assert operation.failure_reason == (reason or None)
    assert operation.version == 3
    [event] = operation.pull_events()
    assert (event.status, event.failure_reason, event.causation_id) == (
        status.value,
        reason,
        "evt_1",
    )


def test_a_provider_outcome_may_overtake_the_pending_step() -> None:
    operation = new_charge()

    assert outcome(operation, SUCCEEDED) is ProviderEventStatus.APPLIED

    assert (operation.status, operation.provider_reference) == (SUCCEEDED, "ch_1")
    assert [e.status for e in operation.pull_events()] == ["succeeded"]
    # The provider's late answer to the request must not take it back to pending.
    assert operation.mark_accepted("ch_1") is False
    assert operation.status is SUCCEEDED


def test_a_failure_without_a_reason_still_says_why() -> None:
    operation = pending_charge()

    outcome(operation, FAILED)

    assert operation.failure_reason == UNSPECIFIED_FAILURE


@pytest.mark.parametrize("status", [SUCCEEDED, FAILED])
def test_the_same_outcome_again_is_a_harmless_duplicate(status: OperationStatus) -> None:
    operation = pending_charge()
    outcome(operation, status, reason="card_declined" if status is FAILED else "")
    operation.pull_events()

    assert outcome(operation, status, event_id="evt_2") is ProviderEventStatus.DUPLICATE_OUTCOME

    assert operation.status is status
    assert operation.version == 3
    assert operation.pull_events() == []


@pytest.mark.parametrize(("final", "contradiction"), [(SUCCEEDED, FAILED), (FAILED, SUCCEEDED)])
def test_a_contradicting_outcome_never_overwrites_a_terminal_state(
    final: OperationStatus, contradiction: OperationStatus
) -> None:
    operation = pending_charge()
    outcome(operation, final, reason="card_declined" if final is FAILED else "")
    operation.pull_events()
    reason_before = operation.failure_reason

    status = outcome(
        operation,
        contradiction,
        event_id="evt_2",
        reason="insufficient_funds" if contradiction is FAILED else "",
    )

    assert status is ProviderEventStatus.CONFLICT
    assert (operation.status, operation.failure_reason) == (final, reason_before)
    # The conflict is an event of its own, so it takes the next version.
    assert operation.version == 4
    [event] = operation.pull_events()
    assert isinstance(event, events.ContradictingOutcomeReceived)
    assert event.status == contradiction.value
    assert event.causation_id == "evt_2"
    assert event.failure_reason.startswith("contradicting provider event evt_2")
    assert f"already {final.value}" in event.failure_reason


def test_an_outcome_for_another_kind_of_operation_is_ignored() -> None:
    operation = pending_charge()

    assert outcome(operation, SUCCEEDED, kind=OperationKind.PAYOUT) is ProviderEventStatus.IGNORED
    assert operation.status is OperationStatus.PENDING


def test_a_provider_outcome_is_final_by_definition() -> None:
    with pytest.raises(ValueError, match="succeeded or failed"):
        outcome(pending_charge(), OperationStatus.PENDING)


@pytest.mark.parametrize(
    ("same", "changes"),
    [
        (True, {}),
        (False, {"amount": EUR_12_50 + EUR_12_50}),
        (False, {"instrument": "pm_card_declined"}),
        (False, {"reference": "pay-2"}),
        (False, {"kind": OperationKind.PAYOUT}),
    ],
)
def test_same_request_compares_every_parameter(same: bool, changes: dict[str, object]) -> None:
    request: dict[str, object] = {
        "kind": OperationKind.CHARGE,
        "amount": EUR_12_50,
        "instrument": PAYMENT_METHOD,
        "reference": "pay-1",
        **changes,
    }
    assert new_charge().same_request(**request) is same  # type: ignore[arg-type]  # the cases vary the types, so they are objects


# -- failover ------------------------------------------------------------------------------


def test_only_the_request_that_opened_an_operation_may_fail_it_over_at_once() -> None:
    opened = new_charge()
    read_back = dataclasses.replace(opened)  # as a row loaded by a later request

    assert opened.may_fail_over
    # Its first asker may have died with the request in flight: it stays with its provider.
    assert not read_back.may_fail_over


def test_an_operation_cleared_by_not_processed_answers_may_fail_over_until_sent_again() -> None:
    operation = dataclasses.replace(new_charge())

    assert operation.mark_unsent()
    assert operation.may_fail_over
    assert not operation.mark_unsent()  # once
    # About to be asked again, even of the same provider: a request may be in flight.
    assert operation.route_to("simulator")
    assert (operation.provider, operation.failover_clear) == ("simulator", False)
    assert not operation.may_fail_over


def test_routing_is_refused_once_a_provider_may_have_acted() -> None:
    unknown = new_charge()
    unknown.mark_unknown()
    answered = pending_charge()

    assert not unknown.route_to("secondary")
    assert not answered.route_to("secondary")
    assert not unknown.mark_unsent()
    assert not new_charge().route_to("simulator")  # already there, not cleared: no change
