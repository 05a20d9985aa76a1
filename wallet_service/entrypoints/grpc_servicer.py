"""WalletService over gRPC: converts messages, calls the service layer, converts back.

No try/except here: domain errors become statuses in common.grpc.errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from common.grpc.convert import money_from_request, money_to_proto, timestamp
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from wallet_service.domain.model import Account, Entry, LedgerTransaction
from wallet_service.service_layer.services import WalletService

Context = grpc.aio.ServicerContext[Any, Any]


def account_to_proto(account: Account) -> wallet_pb2.Account:
    return wallet_pb2.Account(
        account_id=account.account_id,
        owner_id=account.owner_id,
        currency=account.currency,
        balance=balance_to_proto(account),
        created_at=timestamp(account.created_at),
    )


def balance_to_proto(account: Account) -> wallet_pb2.Balance:
    return wallet_pb2.Balance(
        account_id=account.account_id,
        available=money_to_proto(account.available),
        held=money_to_proto(account.held),
        total=money_to_proto(account.total),
        version=account.version,
    )


def entry_to_proto(entry: Entry, transaction_id: str, created_at: Any) -> wallet_pb2.LedgerEntry:
    return wallet_pb2.LedgerEntry(
        entry_id=entry.entry_id,
        transaction_id=transaction_id,
        account_id=entry.account_id,
        amount=money_to_proto(entry.amount),
        created_at=timestamp(created_at),
    )


def transaction_to_proto(txn: LedgerTransaction) -> wallet_pb2.LedgerTransaction:
    return wallet_pb2.LedgerTransaction(
        transaction_id=txn.transaction_id,
        operation_ref=txn.operation_ref,
        kind=txn.kind.value,
        entries=[entry_to_proto(e, txn.transaction_id, txn.created_at) for e in txn.entries],
        created_at=timestamp(txn.created_at),
    )


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, service: WalletService) -> None:
        self._service = service

    async def OpenAccount(
        self, request: wallet_pb2.OpenAccountRequest, context: Context
    ) -> wallet_pb2.Account:
        account = await self._service.open_account(
            owner_id=request.owner_id,
            currency=request.currency,
            operation_ref=request.operation_ref,
        )
        return account_to_proto(account)

    async def GetAccount(
        self, request: wallet_pb2.GetAccountRequest, context: Context
    ) -> wallet_pb2.Account:
        return account_to_proto(await self._service.get_account(request.account_id))

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: Context
    ) -> wallet_pb2.Balance:
        return balance_to_proto(await self._service.get_account(request.account_id))

    async def Credit(
        self, request: wallet_pb2.CreditRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        return await self._move(self._service.credit, request)

    async def Debit(
        self, request: wallet_pb2.DebitRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        return await self._move(self._service.debit, request)

    @staticmethod
    async def _move(
        movement: Callable[..., Awaitable[LedgerTransaction]],
        request: wallet_pb2.CreditRequest | wallet_pb2.DebitRequest,
    ) -> wallet_pb2.LedgerTransaction:
        txn = await movement(
            operation_ref=request.operation_ref,
            account_id=request.account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            description=request.description,
        )
        return transaction_to_proto(txn)

    async def ListEntries(
        self, request: wallet_pb2.ListEntriesRequest, context: Context
    ) -> wallet_pb2.ListEntriesResponse:
        page = await self._service.list_entries(
            request.account_id, page_size=request.page_size, page_token=request.page_token
        )
        return wallet_pb2.ListEntriesResponse(
            entries=[entry_to_proto(e, txn, at) for e, txn, at in page.entries],
            next_page_token=page.next_page_token,
        )

    async def PlaceHold(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("WalletService.PlaceHold is not implemented yet")

    async def CaptureHold(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("WalletService.CaptureHold is not implemented yet")

    async def ReleaseHold(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("WalletService.ReleaseHold is not implemented yet")

    async def Transfer(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("WalletService.Transfer is not implemented yet")
