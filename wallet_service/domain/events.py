"""Facts the wallet publishes (past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from common.money import Money


@dataclass(frozen=True, slots=True)
class AccountOpened:
    account_id: str
    owner_id: str
    currency: str
    version: int


@dataclass(frozen=True, slots=True)
class LedgerTransactionRecorded:
    transaction_id: str
    operation_ref: str
    kind: str
    account_id: str
    amount: Money
    balance_after: Money
    version: int


WalletEvent = AccountOpened | LedgerTransactionRecorded
