"""Accounts and balanced ledger transactions. Plain Python: no SQL, no gRPC.

Every movement is a ledger transaction whose entries sum to zero per currency (invariant 1).
Money from or to the outside world passes through the currency's clearing account, the one
account allowed below zero: it mirrors what the outside world holds of ours.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from common.errors import FailedPrecondition, IdempotencyConflict, InsufficientFunds
from common.ids import new_id
from common.money import Money
from wallet_service.domain import events

# Clearing account ids are derived from the currency, so every replica agrees on them. A
# clearing account keeps no projected balance (its balance is the sum of its entries): every
# deposit in a currency touches it, and a balance row there would serialise them all.
_CLEARING_NAMESPACE = uuid.UUID("6f1c0c2e-9a43-4d0f-9f5e-3b7a1c2d4e5f")


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    CLEARING = "clearing"


class TransactionKind(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


def clearing_account_id(currency: str) -> str:
    return str(uuid.uuid5(_CLEARING_NAMESPACE, f"clearing:{currency}"))


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    account_id: str
    amount: Money  # signed: what the entry adds to the account


@dataclass
class LedgerTransaction:
    transaction_id: str
    operation_ref: str
    kind: TransactionKind
    entries: list[Entry]
    description: str = ""
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        totals: dict[str, int] = {}
        for entry in self.entries:
            cur = entry.amount.currency
            totals[cur] = totals.get(cur, 0) + entry.amount.amount_minor
        if any(totals.values()):
            raise ValueError(f"unbalanced ledger transaction {self.transaction_id}: {totals}")

    def entry_for(self, account_id: str) -> Entry:
        return next(e for e in self.entries if e.account_id == account_id)

    def same_request(self, kind: TransactionKind, account_id: str, amount: Money) -> bool:
        """Whether a repeated call with this operation_ref asks for the same thing."""
        if self.kind is not kind:
            return False
        signed = amount if kind is TransactionKind.CREDIT else -amount
        return any(e.account_id == account_id and e.amount == signed for e in self.entries)


@dataclass
class Account:
    account_id: str
    owner_id: str
    currency: str
    kind: AccountKind = AccountKind.CUSTOMER
    total_minor: int = 0
    held_minor: int = 0
    version: int = 0
    open_ref: str = ""
    created_at: datetime | None = None
    _events: list[events.WalletEvent] = field(default_factory=list, repr=False)

    @classmethod
    def open(cls, *, owner_id: str, currency: str, open_ref: str) -> Account:
        account = cls(account_id=new_id(), owner_id=owner_id, currency=currency, open_ref=open_ref)
        account.version = 1
        account._events.append(
            events.AccountOpened(account.account_id, owner_id, currency, account.version)
        )
        return account

    @classmethod
    def clearing(cls, currency: str) -> Account:
        return cls(
            account_id=clearing_account_id(currency),
            owner_id="paysuite",
            currency=currency,
            kind=AccountKind.CLEARING,
            open_ref=f"clearing:{currency}",
        )

    @property
    def total(self) -> Money:
        return Money(self.total_minor, self.currency)

    @property
    def held(self) -> Money:
        return Money(self.held_minor, self.currency)

    @property
    def available(self) -> Money:
        return Money(self.total_minor - self.held_minor, self.currency)

    def check_currency(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise FailedPrecondition(
                f"account {self.account_id} holds {self.currency}, not {amount.currency}"
            )

    def apply(self, txn: LedgerTransaction) -> None:
        entry = txn.entry_for(self.account_id)
        new_total = self.total_minor + entry.amount.amount_minor
        if new_total - self.held_minor < 0:
            raise InsufficientFunds(
                f"account {self.account_id} has {self.available} available, needs {-entry.amount}"
            )
        self.total_minor = new_total
        self.version += 1
        self._events.append(
            events.LedgerTransactionRecorded(
                transaction_id=txn.transaction_id,
                operation_ref=txn.operation_ref,
                kind=txn.kind.value,
                account_id=self.account_id,
                amount=entry.amount,
                balance_after=self.total,
                version=self.version,
            )
        )

    def pull_events(self) -> list[events.WalletEvent]:
        pulled, self._events = self._events, []
        return pulled


def move(
    *,
    operation_ref: str,
    kind: TransactionKind,
    account: Account,
    amount: Money,
    description: str = "",
) -> LedgerTransaction:
    """Credits (or debits) `account` against the currency's clearing account."""
    account.check_currency(amount)
    signed = amount if kind is TransactionKind.CREDIT else -amount
    txn = LedgerTransaction(
        transaction_id=new_id(),
        operation_ref=operation_ref,
        kind=kind,
        description=description,
        entries=[
            Entry(new_id(), account.account_id, signed),
            Entry(new_id(), clearing_account_id(amount.currency), -signed),
        ],
    )
    account.apply(txn)
    return txn


def check_replay(
    existing: LedgerTransaction, kind: TransactionKind, account_id: str, amount: Money
) -> LedgerTransaction:
    if not existing.same_request(kind, account_id, amount):
        raise IdempotencyConflict(
            f"operation_ref {existing.operation_ref!r} was already used for a different operation"
        )
    return existing
