"""The ledger: every movement of money is one balanced transaction whose entries sum to zero
per currency (invariant 1), across customer and system accounts:

- clearing, per provider and currency: mirrors what the outside world holds of ours;
- FX liquidity, per currency: the wallet's own stock each side of a conversion;
- fees, per currency: what the wallet earned.

System accounts may go below zero and keep no projected balance (their balance is the sum of
their entries): every deposit in a currency touches its clearing account, and a balance row
there would serialise them all. Plain Python: no SQL, no gRPC.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from common.money import Money
from wallet_service.domain.fx import Conversion

# System account ids are derived from their names, so every replica agrees on them.
_SYSTEM_NAMESPACE = uuid.UUID("6f1c0c2e-9a43-4d0f-9f5e-3b7a1c2d4e5f")


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    CLEARING = "clearing"
    FX = "fx"
    FEES = "fees"


class TransactionKind(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"
    CAPTURE = "capture"
    TRANSFER = "transfer"


# Cached: every posting names its system accounts (a credit its clearing account twice), and
# a uuid5 (a SHA-1 and a UUID object) cost about as much as the rest of the decision. Bounded:
# providers and currencies are few, but a provider name comes in a request.
@functools.lru_cache(maxsize=1024)
def clearing_account_id(currency: str, provider: str = "") -> str:
    # No provider keeps the id the walking skeleton gave each currency's clearing account.
    name = f"clearing:{provider}:{currency}" if provider else f"clearing:{currency}"
    return str(uuid.uuid5(_SYSTEM_NAMESPACE, name))


@functools.lru_cache(maxsize=64)
def fx_account_id(currency: str) -> str:
    return str(uuid.uuid5(_SYSTEM_NAMESPACE, f"fx:{currency}"))


@functools.lru_cache(maxsize=64)
def fees_account_id(currency: str) -> str:
    return str(uuid.uuid5(_SYSTEM_NAMESPACE, f"fees:{currency}"))


@dataclass(frozen=True, slots=True)
class SystemAccount:
    account_id: str
    kind: AccountKind
    currency: str
    name: str

    @classmethod
    def clearing(cls, currency: str, provider: str = "") -> SystemAccount:
        name = f"clearing:{provider}:{currency}" if provider else f"clearing:{currency}"
        return cls(clearing_account_id(currency, provider), AccountKind.CLEARING, currency, name)

    @classmethod
    def fx(cls, currency: str) -> SystemAccount:
        return cls(fx_account_id(currency), AccountKind.FX, currency, f"fx:{currency}")

    @classmethod
    def fees(cls, currency: str) -> SystemAccount:
        return cls(fees_account_id(currency), AccountKind.FEES, currency, f"fees:{currency}")


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    account_id: str
    amount: Money  # signed: what the entry adds to the account
    balance_after: int | None = None  # the customer account's total after it; None on system ones


@dataclass
class LedgerTransaction:
    transaction_id: str
    operation_ref: str
    kind: TransactionKind
    entries: list[Entry]
    description: str = ""
    conversion: Conversion | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        unbalanced = imbalance(e.amount for e in self.entries)
        if unbalanced:
            raise ValueError(f"unbalanced ledger transaction {self.transaction_id}: {unbalanced}")

    def entry_for(self, account_id: str) -> Entry:
        return next(e for e in self.entries if e.account_id == account_id)


@dataclass(frozen=True, slots=True)
class RecordedTransaction:
    """A ledger transaction as the journal holds it, read back for audit (GetTransactions,
    ListTransactions). Unlike `LedgerTransaction` it is not re-validated: a journal altered
    behind the service's back is shown as it is, so a reconciliation can see the damage."""

    transaction_id: str
    operation_ref: str
    kind: str
    entries: list[Entry]
    created_at: datetime
    description: str = ""

    @property
    def imbalance(self) -> dict[str, int]:
        return imbalance(e.amount for e in self.entries)


def imbalance(amounts: Iterable[Money]) -> dict[str, int]:
    """Per currency, what the amounts fail to cancel out; empty when they balance."""
    totals: dict[str, int] = {}
    for amount in amounts:
        totals[amount.currency] = totals.get(amount.currency, 0) + amount.amount_minor
    return {cur: total for cur, total in totals.items() if total}


@dataclass(frozen=True, slots=True)
class Operation:
    """What an operation_ref did: its kind, a fingerprint of its parameters, and its result,
    so that a repeat replays the result and a reuse with other parameters is refused."""

    operation_ref: str
    kind: str
    fingerprint: str
    result: dict[str, Any]
