"""Money in, out and across: credit, debit and transfer, each one balanced ledger transaction.

A credit's path: `credit` builds its mutation (`_posting`), `_operate` runs it (in a group
commit or alone), `_decide_all` locks the batch's accounts and `_decide` replays the ref or
calls the mutation's `act`, which lets wallet_service.domain.postings decide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.errors import FieldViolation, ValidationError, require
from common.ids import parse_id
from common.money import Money
from wallet_service.domain import postings
from wallet_service.domain.account import Account
from wallet_service.domain.ledger import LedgerTransaction, SystemAccount
from wallet_service.service_layer.mutations import (
    Mutation,
    Mutations,
    fingerprint,
    money_part,
    replay_transaction,
)
from wallet_service.service_layer.ports import UnitOfWork


class Postings(Mutations):
    async def credit(
        self,
        *,
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str = "",
        provider: str = "",
    ) -> LedgerTransaction:
        return await self._operate(
            self._posting(
                "credit", postings.credit, operation_ref, account_id, amount, description, provider
            )
        )

    async def debit(
        self,
        *,
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str = "",
        provider: str = "",
    ) -> LedgerTransaction:
        return await self._operate(
            self._posting(
                "debit", postings.debit, operation_ref, account_id, amount, description, provider
            )
        )

    def _posting(
        self,
        kind: str,
        posting: Callable[..., LedgerTransaction],
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str,
        provider: str,
    ) -> Mutation[LedgerTransaction]:
        """A credit or a debit of one customer account against its provider's clearing."""
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")
        if provider:
            require(provider, "provider", max_length=64)

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[LedgerTransaction, dict[str, Any]]:
            txn = posting(
                accounts[account_id],
                amount,
                operation_ref=operation_ref,
                limits=self._limits,
                provider=provider,
                description=description,
            )
            await uow.accounts.ensure_system([SystemAccount.clearing(amount.currency, provider)])
            await uow.accounts.add_transaction(txn)
            return txn, {"transaction_id": txn.transaction_id}

        return Mutation(
            operation_ref,
            kind,
            fingerprint(account_id, money_part(amount), provider),
            [account_id],
            act,
            replay_transaction,
        )

    async def transfer(
        self,
        *,
        operation_ref: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        reference: str = "",
        fee: Money | None = None,
    ) -> LedgerTransaction:
        require(operation_ref, "operation_ref")
        source_id = parse_id(source_account_id, "source_account_id")
        destination_id = parse_id(destination_account_id, "destination_account_id")
        if source_id == destination_id:
            raise ValidationError(
                FieldViolation("destination_account_id", "must differ from source_account_id")
            )

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[LedgerTransaction, dict[str, Any]]:
            source, destination = accounts[source_id], accounts[destination_id]
            rate = None
            if source.currency != destination.currency:
                rate = await uow.accounts.latest_rate(source.currency, destination.currency)
            txn = postings.transfer(
                source,
                destination,
                amount,
                operation_ref=operation_ref,
                limits=self._limits,
                rate=rate,
                fee=fee,
                description=reference,
            )
            await uow.accounts.ensure_system(_system_accounts(source, destination, fee))
            await uow.accounts.add_transaction(txn)
            return txn, {"transaction_id": txn.transaction_id}

        return await self._operate(
            Mutation(
                operation_ref,
                "transfer",
                fingerprint(source_id, destination_id, money_part(amount), money_part(fee)),
                [source_id, destination_id],
                act,
                replay_transaction,
            )
        )


def _system_accounts(
    source: Account, destination: Account, fee: Money | None
) -> list[SystemAccount]:
    system = []
    if source.currency != destination.currency:
        system += [SystemAccount.fx(source.currency), SystemAccount.fx(destination.currency)]
    if fee is not None:
        system.append(SystemAccount.fees(fee.currency))
    return system
