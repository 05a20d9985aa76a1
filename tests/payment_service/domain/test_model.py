import pytest

from common.errors import IdempotencyConflict
from common.money import Money
from payment_service.domain.model import (
    ALLOWED,
    TERMINAL,
    DepositRequest,
    InvalidTransition,
    Payment,
    PaymentStatus,
)

S = PaymentStatus


def deposit(amount: int = 1000) -> Payment:
    return Payment.deposit(
        DepositRequest(
            idempotency_key="key-1",
            account_id="0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1",
            amount=Money(amount, "USD"),
            payment_method="pm_card_ok",
        )
    )


def test_a_deposit_starts_initiated_with_one_recorded_change() -> None:
    payment = deposit()
    assert payment.status is S.INITIATED
    assert payment.version == 1
    assert [(c.from_status, c.to_status) for c in payment.new_changes] == [(None, S.INITIATED)]
    assert [e.to_status for e in payment.pull_events()] == ["initiated"]


def test_happy_path_records_every_change_in_order() -> None:
    payment = deposit()
    payment.mark_pending("op-1")
    payment.complete()
    assert payment.status is S.COMPLETED
    assert payment.gateway_operation_id == "op-1"
    assert [c.sequence for c in payment.new_changes] == [1, 2, 3]
    assert [e.to_status for e in payment.pull_events()] == ["initiated", "pending", "completed"]
    assert payment.pull_events() == []


def test_failure_keeps_the_reason() -> None:
    payment = deposit()
    payment.mark_pending("op-1")
    payment.fail("card_declined")
    assert payment.status is S.FAILED
    assert payment.failure_reason == "card_declined"
    assert payment.new_changes[-1].reason == "card_declined"


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_are_final(terminal: PaymentStatus) -> None:
    assert ALLOWED[terminal] == frozenset()


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), S.COMPLETED),  # initiated cannot complete without the provider
        ((S.PENDING,), S.INITIATED),
        ((S.PENDING, S.COMPLETED), S.FAILED),
        ((S.PENDING, S.FAILED), S.COMPLETED),
        ((S.PENDING, S.FAILED), S.PENDING),
    ],
)
def test_states_never_move_backwards(path: tuple[PaymentStatus, ...], target: S) -> None:
    payment = deposit()
    for step in path:
        payment._move(step, "")
    version = payment.version
    with pytest.raises(InvalidTransition):
        payment._move(target, "")
    assert payment.version == version


def test_every_transition_in_the_table_moves_forward() -> None:
    order = [S.INITIATED, S.PENDING, S.REFUNDING, S.REQUIRES_MANUAL_REVIEW]
    for source, targets in ALLOWED.items():
        for target in targets:
            assert target not in order[: order.index(source) + 1] if source in order else True


def test_replayed_key_with_different_amount_is_a_conflict() -> None:
    payment = deposit(1000)
    other = DepositRequest(
        idempotency_key="key-1",
        account_id=payment.destination_account_id,
        amount=Money(999, "USD"),
        payment_method="pm_card_ok",
    )
    with pytest.raises(IdempotencyConflict):
        payment.check_same_deposit(other)
