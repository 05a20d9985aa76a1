"""The reconciliation's decisions: each kind of mismatch, and clean data making none."""

from __future__ import annotations

import pytest

from recovery_worker.domain.reconcile import (
    LedgerTxn,
    PaymentFacts,
    ProviderOp,
    Step,
    check_movement,
    check_payment,
)
from tests.recovery_worker.reconcile_fakes import facts, movement, succeeded


def by_ref(*txns: LedgerTxn) -> dict[str, LedgerTxn]:
    return {t.operation_ref: t for t in txns}


@pytest.mark.parametrize(
    ("kind", "step"),
    [
        ("deposit", Step.CREDIT),
        ("deposit", Step.REVIEW_CREDIT),
        ("withdrawal", Step.CAPTURE),
        ("refund", Step.CAPTURE),
    ],
)
def test_a_completed_payment_that_all_three_sides_agree_on_is_clean(kind: str, step: Step) -> None:
    payment = facts(kind=kind)
    assert check_payment(payment, by_ref(movement(payment, step)), succeeded(payment)) == []


def test_a_completed_transfer_needs_no_provider_operation() -> None:
    payment = facts(kind="transfer", operation="")
    assert check_payment(payment, by_ref(movement(payment, Step.TRANSFER)), None) == []


def test_a_completed_deposit_without_its_credit_is_a_mismatch_showing_both_sides() -> None:
    payment = facts()
    [mismatch] = check_payment(payment, {}, succeeded(payment))
    assert mismatch.payment_id == payment.payment_id
    assert "moved 0 USD" in mismatch.reason
    assert mismatch.evidence["payment.amount"] == "1000 USD"
    assert mismatch.evidence["wallet.credit"] == "(none)"


def test_a_credit_of_another_amount_is_a_mismatch() -> None:
    payment = facts()
    [mismatch] = check_payment(
        payment, by_ref(movement(payment, Step.CREDIT, 900)), succeeded(payment)
    )
    assert "moved 900 USD" in mismatch.reason
    assert "+900 USD" in mismatch.evidence["wallet.credit"]


def test_a_deposit_credited_twice_is_a_mismatch() -> None:
    payment = facts()
    txns = by_ref(movement(payment, Step.CREDIT), movement(payment, Step.REVIEW_CREDIT))
    [mismatch] = check_payment(payment, txns, succeeded(payment))
    assert "moved 2000 USD" in mismatch.reason


def test_an_unbalanced_transaction_is_a_mismatch() -> None:
    payment = facts()
    tampered = movement(payment, Step.CREDIT, extra=500)
    found = check_payment(payment, by_ref(tampered), succeeded(payment))
    reasons = [m.reason for m in found]
    assert any("do not balance" in r for r in reasons)
    assert any("moved 1500 USD" in r for r in reasons)
    assert "unbalanced" in found[0].evidence["wallet.credit"]


def test_a_movement_of_another_kind_is_a_mismatch() -> None:
    payment = facts()
    txns = by_ref(movement(payment, Step.CREDIT), movement(payment, Step.CAPTURE))
    [mismatch] = check_payment(payment, txns, succeeded(payment))
    assert "another kind" in mismatch.reason


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (None, "no provider operation"),
        (ProviderOp("op-1", "failed", 1000, "USD"), "provider operation is failed"),
        (ProviderOp("op-1", "succeeded", 999, "USD"), "provider moved 999 USD"),
        (ProviderOp("op-1", "succeeded", 1000, "EUR"), "provider moved 1000 EUR"),
    ],
)
def test_a_provider_that_disagrees_is_a_mismatch_with_its_side_in_the_evidence(
    operation: ProviderOp | None, expected: str
) -> None:
    payment = facts()
    [mismatch] = check_payment(payment, by_ref(movement(payment, Step.CREDIT)), operation)
    assert expected in mismatch.reason
    assert mismatch.evidence["gateway.operation"] == (
        operation.describe() if operation else "(none)"
    )


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_money_moved_for_a_failed_or_cancelled_payment_is_a_mismatch(status: str) -> None:
    payment = facts(status)
    [mismatch] = check_payment(payment, by_ref(movement(payment, Step.CREDIT)), None)
    assert f"{status} deposit moved money" in mismatch.reason
    assert check_payment(payment, {}, None) == []


@pytest.mark.parametrize("status", ["initiated", "pending", "refunding", "requires_manual_review"])
def test_a_payment_not_settled_is_not_judged(status: str) -> None:
    assert check_payment(facts(status), {}, None) == []


def test_a_movement_of_no_payment_is_an_orphan() -> None:
    ghost = facts()
    txn = movement(ghost, Step.CREDIT)
    mismatch = check_movement(txn, None)
    assert mismatch is not None
    assert mismatch.payment_id == ""
    assert "belongs to no payment" in mismatch.reason
    assert mismatch.evidence["wallet.movement"] == txn.describe()


def test_a_movement_is_judged_against_its_payment() -> None:
    deposit = facts()
    assert check_movement(movement(deposit, Step.CREDIT), deposit) is None
    wrong = check_movement(movement(deposit, Step.CAPTURE), deposit)
    assert wrong is not None
    assert "does not fit a deposit" in wrong.reason
    failed = facts("failed")
    credit = movement(failed, Step.CREDIT)
    same = check_movement(credit, failed)
    # The mismatch the payment side reports, so both directions land in one case.
    assert same is not None
    assert check_payment(failed, by_ref(credit), None) == [same]


def test_a_movement_not_keyed_by_a_payment_step_is_none_of_ours() -> None:
    payment = facts()
    other = LedgerTxn("t", "some-caller-ref", (), payment.created_at)
    hold = LedgerTxn("t", f"{payment.payment_id}:hold", (), payment.created_at)
    assert check_movement(other, None) is None
    assert check_movement(hold, None) is None


def test_facts_know_their_refs_and_account() -> None:
    payment: PaymentFacts = facts(kind="withdrawal")
    assert payment.ref(Step.CAPTURE) == f"{payment.payment_id}:capture"
    assert payment.account_id == payment.source_account_id
