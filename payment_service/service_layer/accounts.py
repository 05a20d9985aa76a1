"""Who owns an account and in which currency it is held: the checks every caller's request
goes through before it touches a payment."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from common.auth import Principal, denied
from common.errors import FieldViolation, NotFound, ValidationError
from common.money import Money
from payment_service.domain.model import Payment
from payment_service.service_layer.ports import AccountInfo, WalletPort

May = Callable[[Principal, str], bool]


class AccountDirectory:
    """Account currencies and owners, cached: neither ever changes, so after the first look-up
    CreateDeposit needs no call to the wallet on its request path. Only accounts that exist
    are cached; the cache is bounded (least recently used entries go first)."""

    def __init__(self, wallet: WalletPort, *, max_entries: int = 100_000) -> None:
        self._wallet = wallet
        self._max_entries = max_entries
        self._accounts: OrderedDict[str, AccountInfo] = OrderedDict()

    async def info(self, account_id: str) -> AccountInfo:
        info = self._accounts.get(account_id)
        if info is None:
            info = await self._wallet.get_account(account_id)
            self._accounts[account_id] = info
            if len(self._accounts) > self._max_entries:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(account_id)
        return info

    async def currency_of(self, account_id: str) -> str:
        return (await self.info(account_id)).currency

    async def authorize(
        self, caller: Principal, account_id: str, what: str, may: May = Principal.may_act_for
    ) -> None:
        """Refuses unless `may` allows the caller for the account's owner (by default: only
        the owner, or our own services, move its money). An account that does not exist is
        refused alike, so account ids cannot be probed."""
        # `may` asked of no owner at all: what the caller's role allows, whoever the owner is.
        if may(caller, ""):
            return
        try:
            owner = (await self.info(account_id)).owner_id
        except NotFound:
            raise denied(what) from None
        if not may(caller, owner):
            raise denied(what)

    async def allows(self, caller: Principal, payment: Payment, may: May) -> bool:
        """Whether `may` allows the caller for the owner of any account the payment moves
        money of (a transfer's two owners both read it)."""
        for account_id in (payment.source_account_id, payment.destination_account_id):
            if account_id and may(caller, (await self.info(account_id)).owner_id):
                return True
        return False

    async def check_currency(self, account_id: str, amount: Money, field: str) -> None:
        currency = await self.currency_of(account_id)
        if currency != amount.currency:
            raise ValidationError(
                FieldViolation(
                    field, f"account {account_id} holds {currency}, not {amount.currency}"
                )
            )
