from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from common.errors import ValidationError
from common.money import MAX_AMOUNT_MINOR, Money
from wallet_service.domain import events as ev
from wallet_service.domain import postings
from wallet_service.domain.account import Account, AccountStatus, Limits
from wallet_service.domain.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    CurrencyMismatch,
    HoldNotOpen,
    LimitExceeded,
    NotEnoughAvailable,
)
from wallet_service.domain.ledger import (
    Entry,
    LedgerTransaction,
    TransactionKind,
    clearing_account_id,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Limits()


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def funded(minor: int = 0, currency: str = "USD") -> Account:
    account = Account.open(owner_id="alice", currency=currency, open_ref="open-1")
    if minor:
        postings.credit(account, Money(minor, currency), operation_ref="seed", limits=LIMITS)
    return account


def replayed(account: Account) -> Account:
    """The same account rebuilt from nothing but its history."""
    copy = Account(account.account_id, account.owner_id, account.currency)
    copy.replay(account.new_events)
    return copy


def test_credit_is_balanced_against_the_clearing_account() -> None:
    account = funded()
    txn = postings.credit(account, usd(500), operation_ref="p1:credit", limits=LIMITS)
    assert sum(e.amount.amount_minor for e in txn.entries) == 0
    assert txn.entry_for(clearing_account_id("USD")).amount == usd(-500)
    assert txn.entry_for(account.account_id).balance_after == 500
    assert account.available == usd(500)


def test_a_provider_has_its_own_clearing_account() -> None:
    account = funded()
    txn = postings.credit(account, usd(5), operation_ref="c", limits=LIMITS, provider="simulator")
    assert clearing_account_id("USD", "simulator") != clearing_account_id("USD")
    assert txn.entry_for(clearing_account_id("USD", "simulator")).amount == usd(-5)


def test_unbalanced_transactions_cannot_exist() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        LedgerTransaction("t", "r", TransactionKind.CREDIT, [Entry("e", "a", usd(1))])


def test_debit_beyond_available_is_refused_with_the_available_amount() -> None:
    account = funded(100)
    account.place_hold(
        hold_id="h", amount=usd(50), expires_at=NOW, reference="", operation_ref="h", limits=LIMITS
    )
    with pytest.raises(NotEnoughAvailable) as caught:
        postings.debit(account, usd(51), operation_ref="d", limits=LIMITS)
    assert caught.value.metadata == {"available_minor": "50", "currency": "USD"}
    assert account.total == usd(100)


def test_currency_must_match_the_account() -> None:
    with pytest.raises(CurrencyMismatch):
        postings.credit(funded(currency="EUR"), usd(1), operation_ref="c", limits=LIMITS)


def test_limits_are_checked_before_anything_changes() -> None:
    account = funded(10)
    with pytest.raises(LimitExceeded):
        postings.credit(account, usd(11), operation_ref="c", limits=Limits(max_operation_minor=10))
    with pytest.raises(LimitExceeded):
        postings.credit(account, usd(91), operation_ref="c", limits=Limits(max_balance_minor=100))
    assert account.total == usd(10)
    assert account.version == 2


def test_a_credit_that_would_overflow_64_bits_is_a_limit_not_a_crash() -> None:
    account = funded(MAX_AMOUNT_MINOR)
    with pytest.raises(LimitExceeded):
        postings.credit(account, usd(1), operation_ref="c", limits=LIMITS)


def test_a_hold_reduces_available_and_a_partial_capture_releases_the_rest() -> None:
    account = funded(100)
    account.place_hold(
        hold_id="h",
        amount=usd(60),
        expires_at=NOW + timedelta(hours=1),
        reference="pay-1",
        operation_ref="h",
        limits=LIMITS,
    )
    assert (account.available, account.held, account.total) == (usd(40), usd(60), usd(100))
    txn = postings.capture(account, "h", usd(25), operation_ref="cap", now=NOW)
    assert txn.entry_for(account.account_id).amount == usd(-25)
    assert (account.available, account.held, account.total) == (usd(75), usd(0), usd(75))
    with pytest.raises(HoldNotOpen):
        account.release_hold("h", "rel")


def test_a_capture_cannot_exceed_its_hold() -> None:
    account = funded(100)
    account.place_hold(
        hold_id="h", amount=usd(10), expires_at=NOW + timedelta(1), reference="",
        operation_ref="h", limits=LIMITS,
    )  # fmt: skip
    with pytest.raises(ValidationError):
        postings.capture(account, "h", usd(11), operation_ref="cap", now=NOW)


def test_expired_holds_are_released_and_cannot_be_captured() -> None:
    account = funded(100)
    account.place_hold(
        hold_id="h", amount=usd(10), expires_at=NOW, reference="", operation_ref="h", limits=LIMITS
    )
    with pytest.raises(HoldNotOpen):
        postings.capture(account, "h", None, operation_ref="cap", now=NOW)
    assert account.expire_holds(NOW) == ["h"]
    assert account.available == usd(100)


def test_a_frozen_account_refuses_money_out_but_accepts_credits() -> None:
    account = funded(100)
    account.freeze("f")
    for attempt in (
        lambda: postings.debit(account, usd(1), operation_ref="d", limits=LIMITS),
        lambda: account.place_hold(
            hold_id="h", amount=usd(1), expires_at=NOW, reference="", operation_ref="h",
            limits=LIMITS,
        ),
        lambda: postings.transfer(account, funded(), usd(1), operation_ref="t", limits=LIMITS),
    ):  # fmt: skip
        with pytest.raises(AccountFrozen):
            attempt()
    postings.credit(account, usd(5), operation_ref="c", limits=LIMITS)
    account.unfreeze("u")
    postings.debit(account, usd(105), operation_ref="d", limits=LIMITS)
    assert account.total == usd(0)


def test_only_an_empty_account_closes_and_then_refuses_everything() -> None:
    account = funded(1)
    with pytest.raises(AccountNotEmpty):
        account.close("x")
    postings.debit(account, usd(1), operation_ref="d", limits=LIMITS)
    account.close("x")
    assert account.status is AccountStatus.CLOSED
    with pytest.raises(AccountClosed):
        postings.credit(account, usd(1), operation_ref="c", limits=LIMITS)


def test_history_is_a_hash_chain_and_replays_to_the_same_state() -> None:
    account = funded(100)
    postings.debit(account, usd(30), operation_ref="d", limits=LIMITS)
    history = account.new_events
    assert [r.version for r in history] == [1, 2, 3]
    assert history[0].prev_hash == ev.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in pairwise(history))
    assert all(r.intact() for r in history)
    copy = replayed(account)
    assert (copy.total_minor, copy.version, copy.last_hash) == (70, 3, account.last_hash)


def test_a_tampered_event_no_longer_matches_its_hash() -> None:
    recorded = funded(100).new_events[1]
    forged = ev.RecordedEvent(
        recorded.account_id,
        recorded.version,
        ev.Credited("t", "seed", 1_000_000),
        recorded.prev_hash,
        recorded.hash,
    )
    assert not forged.intact()


def test_snapshot_plus_later_events_equals_the_full_replay() -> None:
    account = funded(100)
    account.place_hold(
        hold_id="h", amount=usd(10), expires_at=NOW, reference="r", operation_ref="h", limits=LIMITS
    )
    history = account.new_events
    partial = Account(account.account_id, account.owner_id, account.currency)
    partial.replay(history[:2])
    restored = Account(account.account_id, account.owner_id, account.currency)
    restored.restore(partial.snapshot())
    restored.replay(history[2:])
    assert restored.snapshot() == account.snapshot()


def test_transfer_in_one_currency_moves_money_between_customers() -> None:
    source, destination = funded(100), funded()
    txn = postings.transfer(
        source, destination, usd(40), operation_ref="t", limits=LIMITS, fee=usd(2)
    )
    assert (source.total, destination.total) == (usd(58), usd(40))
    assert txn.conversion is None
    assert len(txn.entries) == 3
