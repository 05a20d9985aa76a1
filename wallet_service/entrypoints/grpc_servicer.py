"""WalletService over gRPC: converts messages, calls the service layer, converts back.

No try/except here: domain errors become statuses in common.grpc.errors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common.auth import Access, current_principal
from common.errors import FieldViolation, ValidationError
from common.grpc.auth import Policy
from common.grpc.convert import money_from_request, money_to_proto, timestamp, timestamp_parts
from common.grpc.errors import serve_items
from common.money import Money
from paysuite.common.v1 import money_pb2
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from wallet_service.domain.account import Account, AccountStatus
from wallet_service.domain.fx import Conversion
from wallet_service.domain.holds import HoldView
from wallet_service.domain.ledger import Entry, LedgerTransaction, RecordedTransaction
from wallet_service.service_layer.services import WalletService

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name

# Who may call what (common.auth). Users open, read and close their own accounts; every
# posting is made by the payment service (a user moves money through payments, never here);
# operators freeze accounts and read the journal for reconciliation.
POLICY = Policy(
    SERVICE_NAME,
    {
        "OpenAccount": Access.CALLER,
        "GetAccount": Access.CALLER,
        "GetBalance": Access.CALLER,
        "GetHold": Access.CALLER,
        "ListEntries": Access.CALLER,
        "CloseAccount": Access.CALLER,
        "FreezeAccount": Access.OPERATOR,
        "UnfreezeAccount": Access.OPERATOR,
        "GetTransactions": Access.OPERATOR,
        "ListTransactions": Access.OPERATOR,
        "Credit": Access.SERVICE,
        "Credits": Access.SERVICE,
        "Debit": Access.SERVICE,
        "Transfer": Access.SERVICE,
        "Transfers": Access.SERVICE,
        "PlaceHold": Access.SERVICE,
        "PlaceHolds": Access.SERVICE,
        "CaptureHold": Access.SERVICE,
        "CaptureHolds": Access.SERVICE,
        "ReleaseHold": Access.SERVICE,
        "ExpireHolds": Access.SERVICE,
    },
)

# Each item of a batch (Credits, PlaceHolds, CaptureHolds, Transfers) is served as a unary
# call of its own would be (span, logs), all of a batch together so that they are posted in
# one group commit (Mutations); what the unary call would have failed with becomes the item's
# status, not the batch's (common.grpc.errors.serve_items).
CREDIT_METHOD = f"/{SERVICE_NAME}/Credit"
PLACE_HOLD_METHOD = f"/{SERVICE_NAME}/PlaceHold"
CAPTURE_HOLD_METHOD = f"/{SERVICE_NAME}/CaptureHold"
TRANSFER_METHOD = f"/{SERVICE_NAME}/Transfer"

_STATUS = {
    AccountStatus.OPEN: wallet_pb2.ACCOUNT_STATUS_OPEN,
    AccountStatus.FROZEN: wallet_pb2.ACCOUNT_STATUS_FROZEN,
    AccountStatus.CLOSED: wallet_pb2.ACCOUNT_STATUS_CLOSED,
}


def account_to_proto(account: Account) -> wallet_pb2.Account:
    return wallet_pb2.Account(
        account_id=account.account_id,
        owner_id=account.owner_id,
        currency=account.currency,
        balance=balance_to_proto(account),
        created_at=timestamp(account.created_at),
        status=_STATUS[account.status],
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
    return _entry_message(entry, transaction_id, timestamp(created_at))


def _entry_message(
    entry: Entry, transaction_id: str, created_at: Timestamp | None
) -> wallet_pb2.LedgerEntry:
    """`created_at` already converted: a transaction's entries share its time, converted once
    for all of them (a datetime's conversion was most of an entry's)."""
    balance_after = None
    if entry.balance_after is not None:
        balance_after = money_pb2.Money(
            amount_minor=entry.balance_after, currency=entry.amount.currency
        )
    return wallet_pb2.LedgerEntry(
        entry_id=entry.entry_id,
        transaction_id=transaction_id,
        account_id=entry.account_id,
        amount=money_to_proto(entry.amount),
        created_at=created_at,
        balance_after=balance_after,
    )


def conversion_to_proto(conversion: Conversion) -> wallet_pb2.Conversion:
    return wallet_pb2.Conversion(
        rate=conversion.rate.text,
        rate_source=conversion.rate.source,
        rate_as_of=timestamp(conversion.rate.as_of),
        source_amount=money_to_proto(conversion.source),
        target_amount=money_to_proto(conversion.target),
    )


def transaction_to_proto(txn: LedgerTransaction) -> wallet_pb2.LedgerTransaction:
    message = _transaction_message(
        txn.transaction_id, txn.operation_ref, txn.kind.value, txn.description,
        txn.created_at, txn.entries,
    )  # fmt: skip
    if txn.conversion is not None:
        message.conversion.CopyFrom(conversion_to_proto(txn.conversion))
    return message


def recorded_to_proto(txn: RecordedTransaction) -> wallet_pb2.LedgerTransaction:
    return _transaction_message(
        txn.transaction_id, txn.operation_ref, txn.kind, txn.description,
        txn.created_at, txn.entries,
    )  # fmt: skip


def _transaction_message(
    transaction_id: str,
    operation_ref: str,
    kind: str,
    description: str,
    created_at: datetime | None,
    entries: list[Entry],
) -> wallet_pb2.LedgerTransaction:
    """Filled in place (`entries.add`, the sub-messages' fields set where they are): built
    from keyword arguments, every Money and Timestamp was made and then copied into its
    parent, at about four times the cost, and every posting answers with one of these.
    The same message, to the byte, as the keyword-built one."""
    message = wallet_pb2.LedgerTransaction(
        transaction_id=transaction_id,
        operation_ref=operation_ref,
        kind=kind,
        description=description,
    )
    at = timestamp_parts(created_at)
    if at is not None:
        message.created_at.seconds, message.created_at.nanos = at
    add = message.entries.add
    for entry in entries:
        item = add(
            entry_id=entry.entry_id, transaction_id=transaction_id, account_id=entry.account_id
        )
        item.amount.amount_minor = entry.amount.amount_minor
        item.amount.currency = entry.amount.currency
        if at is not None:
            item.created_at.seconds, item.created_at.nanos = at
        if entry.balance_after is not None:
            item.balance_after.amount_minor = entry.balance_after
            item.balance_after.currency = entry.amount.currency
    return message


def hold_to_proto(hold: HoldView) -> wallet_pb2.Hold:
    return wallet_pb2.Hold(
        hold_id=hold.hold_id,
        account_id=hold.account_id,
        amount=money_to_proto(hold.amount),
        status=hold.status.value,
        captured=money_to_proto(hold.captured),
        expires_at=timestamp(hold.expires_at),
        reference=hold.reference,
    )


def _optional_money(message: money_pb2.Money, *, field: str, present: bool) -> Money | None:
    return money_from_request(message, field=field, present=True) if present else None


def _optional_time(message: Timestamp, *, field: str, present: bool) -> datetime | None:
    if not present:
        return None
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValidationError(FieldViolation(field, "is not a valid timestamp")) from None


def _text(value: str, field: str, *, max_length: int = 256) -> str:
    if len(value) > max_length:
        raise ValidationError(FieldViolation(field, f"must be at most {max_length} characters"))
    return value


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
            caller=current_principal(),
        )
        return account_to_proto(account)

    async def GetAccount(
        self, request: wallet_pb2.GetAccountRequest, context: Context
    ) -> wallet_pb2.Account:
        return account_to_proto(
            await self._service.get_account(request.account_id, caller=current_principal())
        )

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: Context
    ) -> wallet_pb2.Balance:
        return balance_to_proto(
            await self._service.get_account(request.account_id, caller=current_principal())
        )

    async def Credit(
        self, request: wallet_pb2.CreditRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        return transaction_to_proto(await self._credit(request))

    async def _credit(self, request: wallet_pb2.CreditRequest) -> LedgerTransaction:
        """A credit, alone (Credit) or one of a batch (Credits): the same checks and call."""
        return await self._service.credit(
            operation_ref=request.operation_ref,
            account_id=request.account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            description=_text(request.description, "description"),
            provider=request.provider,
        )

    async def Credits(
        self, request: wallet_pb2.CreditsRequest, context: Context
    ) -> wallet_pb2.CreditsResponse:
        results = await serve_items(
            CREDIT_METHOD, request.credits, self._credit, transaction_to_proto
        )
        return wallet_pb2.CreditsResponse(
            results=[wallet_pb2.CreditResult(status=s, transaction=t) for s, t in results]
        )

    async def Debit(
        self, request: wallet_pb2.DebitRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        txn = await self._service.debit(
            operation_ref=request.operation_ref,
            account_id=request.account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            description=_text(request.description, "description"),
            provider=request.provider,
        )
        return transaction_to_proto(txn)

    async def Transfer(
        self, request: wallet_pb2.TransferRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        return transaction_to_proto(await self._transfer(request))

    async def _transfer(self, request: wallet_pb2.TransferRequest) -> LedgerTransaction:
        """A transfer, alone (Transfer) or one of a batch (Transfers): the same checks and call."""
        return await self._service.transfer(
            operation_ref=request.operation_ref,
            source_account_id=request.source_account_id,
            destination_account_id=request.destination_account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            reference=_text(request.reference, "reference"),
            fee=_optional_money(request.fee, field="fee", present=request.HasField("fee")),
        )

    async def Transfers(
        self, request: wallet_pb2.TransfersRequest, context: Context
    ) -> wallet_pb2.TransfersResponse:
        results = await serve_items(
            TRANSFER_METHOD, request.transfers, self._transfer, transaction_to_proto
        )
        return wallet_pb2.TransfersResponse(
            results=[wallet_pb2.TransferResult(status=s, transaction=t) for s, t in results]
        )

    async def PlaceHold(
        self, request: wallet_pb2.PlaceHoldRequest, context: Context
    ) -> wallet_pb2.Hold:
        return hold_to_proto(await self._place_hold(request))

    async def _place_hold(self, request: wallet_pb2.PlaceHoldRequest) -> HoldView:
        """A hold, alone (PlaceHold) or one of a batch (PlaceHolds): the same checks and call."""
        return await self._service.place_hold(
            operation_ref=request.operation_ref,
            account_id=request.account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            expires_at=_optional_time(
                request.expires_at, field="expires_at", present=request.HasField("expires_at")
            ),
            reference=_text(request.reference, "reference"),
        )

    async def PlaceHolds(
        self, request: wallet_pb2.PlaceHoldsRequest, context: Context
    ) -> wallet_pb2.PlaceHoldsResponse:
        results = await serve_items(
            PLACE_HOLD_METHOD, request.holds, self._place_hold, hold_to_proto
        )
        return wallet_pb2.PlaceHoldsResponse(
            results=[wallet_pb2.PlaceHoldResult(status=s, hold=h) for s, h in results]
        )

    async def CaptureHold(
        self, request: wallet_pb2.CaptureHoldRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        return transaction_to_proto(await self._capture_hold(request))

    async def _capture_hold(self, request: wallet_pb2.CaptureHoldRequest) -> LedgerTransaction:
        """A capture, alone (CaptureHold) or one of a batch (CaptureHolds): the same checks and
        call."""
        return await self._service.capture_hold(
            operation_ref=request.operation_ref,
            hold_id=request.hold_id,
            amount=_optional_money(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            provider=request.provider,
            account_id=request.account_id,
        )

    async def CaptureHolds(
        self, request: wallet_pb2.CaptureHoldsRequest, context: Context
    ) -> wallet_pb2.CaptureHoldsResponse:
        results = await serve_items(
            CAPTURE_HOLD_METHOD, request.captures, self._capture_hold, transaction_to_proto
        )
        return wallet_pb2.CaptureHoldsResponse(
            results=[wallet_pb2.CaptureHoldResult(status=s, transaction=t) for s, t in results]
        )

    async def ReleaseHold(
        self, request: wallet_pb2.ReleaseHoldRequest, context: Context
    ) -> wallet_pb2.Hold:
        hold = await self._service.release_hold(
            operation_ref=request.operation_ref,
            hold_id=request.hold_id,
            account_id=request.account_id,
        )
        return hold_to_proto(hold)

    async def GetHold(
        self, request: wallet_pb2.GetHoldRequest, context: Context
    ) -> wallet_pb2.Hold:
        return hold_to_proto(
            await self._service.get_hold(request.hold_id, caller=current_principal())
        )

    async def ExpireHolds(
        self, request: wallet_pb2.ExpireHoldsRequest, context: Context
    ) -> wallet_pb2.ExpireHoldsResponse:
        if not 0 <= request.limit <= 10_000:
            raise ValidationError(FieldViolation("limit", "must be between 0 and 10000"))
        expired = await self._service.expire_holds(limit=request.limit or 100)
        return wallet_pb2.ExpireHoldsResponse(expired_hold_ids=expired)

    async def FreezeAccount(
        self, request: wallet_pb2.AccountStatusRequest, context: Context
    ) -> wallet_pb2.Account:
        account = await self._service.freeze(
            operation_ref=request.operation_ref, account_id=request.account_id
        )
        return account_to_proto(account)

    async def UnfreezeAccount(
        self, request: wallet_pb2.AccountStatusRequest, context: Context
    ) -> wallet_pb2.Account:
        account = await self._service.unfreeze(
            operation_ref=request.operation_ref, account_id=request.account_id
        )
        return account_to_proto(account)

    async def CloseAccount(
        self, request: wallet_pb2.AccountStatusRequest, context: Context
    ) -> wallet_pb2.Account:
        account = await self._service.close(
            operation_ref=request.operation_ref,
            account_id=request.account_id,
            caller=current_principal(),
        )
        return account_to_proto(account)

    async def ListEntries(
        self, request: wallet_pb2.ListEntriesRequest, context: Context
    ) -> wallet_pb2.ListEntriesResponse:
        page = await self._service.list_entries(
            request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            caller=current_principal(),
        )
        return wallet_pb2.ListEntriesResponse(
            entries=[entry_to_proto(e, txn, at) for e, txn, at in page.entries],
            next_page_token=page.next_page_token,
        )

    async def GetTransactions(
        self, request: wallet_pb2.GetTransactionsRequest, context: Context
    ) -> wallet_pb2.GetTransactionsResponse:
        txns = await self._service.get_transactions(list(request.operation_refs))
        return wallet_pb2.GetTransactionsResponse(transactions=[recorded_to_proto(t) for t in txns])

    async def ListTransactions(
        self, request: wallet_pb2.ListTransactionsRequest, context: Context
    ) -> wallet_pb2.ListTransactionsResponse:
        page = await self._service.list_transactions(
            created_after=_optional_time(
                request.created_after,
                field="created_after",
                present=request.HasField("created_after"),
            ),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return wallet_pb2.ListTransactionsResponse(
            transactions=[recorded_to_proto(t) for t in page.transactions],
            next_page_token=page.next_page_token,
        )
