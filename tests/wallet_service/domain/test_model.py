import pytest

from common.errors import FailedPrecondition, IdempotencyConflict, InsufficientFunds
from common.money import Money
from wallet_service.domain.model import (
    Account,
    Entry,
    LedgerTransaction,
    TransactionKind,
    check_replay,
    clearing_account_id,
    move,
)


def account(currency: str = "USD") -> Account:
    return Account.open(owner_id="alice", currency=currency, open_ref="open-1")


def test_credit_is_balanced_against_the_clearing_account() -> None:
    acc = account()
    txn = move(
        operation_ref="p1:credit",
        kind=TransactionKind.CREDIT,
        account=acc,
        amount=Money(500, "USD"),
    )
    assert sum(e.amount.amount_minor for e in txn.entries) == 0
    assert txn.entry_for(clearing_account_id("USD")).amount == Money(-500, "USD")
    assert acc.total == Money(500, "USD")
    assert acc.available == Money(500, "USD")


def test_unbalanced_transactions_cannot_exist() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        LedgerTransaction(
            transaction_id="t",
            operation_ref="r",
            kind=TransactionKind.CREDIT,
            entries=[Entry("e", "a", Money(1, "USD"))],
        )


def test_debit_beyond_available_is_refused_and_changes_nothing() -> None:
    acc = account()
    move(operation_ref="c", kind=TransactionKind.CREDIT, account=acc, amount=Money(100, "USD"))
    acc.held_minor = 50
    with pytest.raises(InsufficientFunds):
        move(operation_ref="d", kind=TransactionKind.DEBIT, account=acc, amount=Money(51, "USD"))
    assert acc.total == Money(100, "USD")


def test_currency_must_match_the_account() -> None:
    with pytest.raises(FailedPrecondition):
        move(
            operation_ref="c",
            kind=TransactionKind.CREDIT,
            account=account("EUR"),
            amount=Money(1, "USD"),
        )


def test_replay_must_ask_for_the_same_movement() -> None:
    acc = account()
    txn = move(operation_ref="c", kind=TransactionKind.CREDIT, account=acc, amount=Money(7, "USD"))
    assert check_replay(txn, TransactionKind.CREDIT, acc.account_id, Money(7, "USD")) is txn
    with pytest.raises(IdempotencyConflict):
        check_replay(txn, TransactionKind.CREDIT, acc.account_id, Money(8, "USD"))
    with pytest.raises(IdempotencyConflict):
        check_replay(txn, TransactionKind.DEBIT, acc.account_id, Money(7, "USD"))
