"""Money movements: each changes the accounts involved (recording their events) and returns
the one balanced ledger transaction that accounts for it."""

from __future__ import annotations

from datetime import datetime

from common.errors import FieldViolation, ValidationError
from common.ids import new_id
from common.money import Money
from wallet_service.domain.account import Account, Limits
from wallet_service.domain.errors import FxRateUnavailable
from wallet_service.domain.fx import Conversion, FxRate
from wallet_service.domain.ledger import (
    Entry,
    LedgerTransaction,
    TransactionKind,
    clearing_account_id,
    fees_account_id,
    fx_account_id,
)


def _customer(account: Account, amount: Money) -> Entry:
    return Entry(new_id(), account.account_id, amount, account.total_minor)


def _system(account_id: str, amount: Money) -> Entry:
    return Entry(new_id(), account_id, amount)


def credit(
    account: Account,
    amount: Money,
    *,
    operation_ref: str,
    limits: Limits,
    provider: str = "",
    description: str = "",
) -> LedgerTransaction:
    """Money arriving from outside: the provider's clearing account -> the customer."""
    txn_id = new_id()
    account.credit(txn_id, amount, operation_ref, limits)
    entries = [
        _customer(account, amount),
        _system(clearing_account_id(amount.currency, provider), -amount),
    ]
    return LedgerTransaction(txn_id, operation_ref, TransactionKind.CREDIT, entries, description)


def debit(
    account: Account,
    amount: Money,
    *,
    operation_ref: str,
    limits: Limits,
    provider: str = "",
    description: str = "",
) -> LedgerTransaction:
    """Money leaving to the outside: the customer -> the provider's clearing account."""
    txn_id = new_id()
    account.debit(txn_id, amount, operation_ref, limits)
    entries = [
        _customer(account, -amount),
        _system(clearing_account_id(amount.currency, provider), amount),
    ]
    return LedgerTransaction(txn_id, operation_ref, TransactionKind.DEBIT, entries, description)


def capture(
    account: Account,
    hold_id: str,
    amount: Money | None,
    *,
    operation_ref: str,
    now: datetime,
    provider: str = "",
) -> LedgerTransaction:
    """A captured hold leaves like a debit; what was not captured is released with it."""
    txn_id = new_id()
    captured = account.capture_hold(
        hold_id=hold_id,
        amount=amount,
        transaction_id=txn_id,
        operation_ref=operation_ref,
        now=now,
    )
    entries = [
        _customer(account, -captured),
        _system(clearing_account_id(captured.currency, provider), captured),
    ]
    return LedgerTransaction(
        txn_id, operation_ref, TransactionKind.CAPTURE, entries, f"hold {hold_id}"
    )


def transfer(
    source: Account,
    destination: Account,
    amount: Money,
    *,
    operation_ref: str,
    limits: Limits,
    rate: FxRate | None = None,
    fee: Money | None = None,
    description: str = "",
) -> LedgerTransaction:
    """`amount` (in the source's currency) from one account to another, in one transaction.

    Across currencies the money passes through the FX liquidity accounts: the source currency's
    receives `amount`, the destination currency's pays out the converted amount. A fee, in the
    source currency, is taken on top of `amount` and goes to the fees account.
    """
    if source.account_id == destination.account_id:
        raise ValidationError(
            FieldViolation("destination_account_id", "must differ from source_account_id")
        )
    source.check_currency(amount)
    if fee is not None:
        source.check_currency(fee)
    conversion = _conversion(source, destination, amount, rate)
    target = conversion.target if conversion else amount
    taken = amount + fee if fee is not None else amount
    # Both sides are checked before either changes, so a refusal leaves both untouched.
    destination.check_incoming(target, limits)
    txn_id = new_id()
    source.transfer_out(txn_id, taken, operation_ref, destination.account_id, limits)
    destination.transfer_in(txn_id, target, operation_ref, source.account_id, limits)
    entries = [_customer(source, -taken), _customer(destination, target)]
    if conversion is not None:
        entries += [
            _system(fx_account_id(amount.currency), amount),
            _system(fx_account_id(target.currency), -target),
        ]
    if fee is not None:
        entries.append(_system(fees_account_id(fee.currency), fee))
    return LedgerTransaction(
        txn_id, operation_ref, TransactionKind.TRANSFER, entries, description, conversion
    )


def _conversion(
    source: Account, destination: Account, amount: Money, rate: FxRate | None
) -> Conversion | None:
    if source.currency == destination.currency:
        return None
    if rate is None or (rate.base, rate.quote) != (source.currency, destination.currency):
        raise FxRateUnavailable(source.currency, destination.currency)
    return Conversion(rate, amount, rate.convert(amount))
