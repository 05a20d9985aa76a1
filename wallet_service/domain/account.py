"""Accounts: event-sourced aggregates. Plain Python: no SQL, no gRPC.

An account's state is the fold of its events (`Account.replay`); a command method checks the
state, then records one event, which both changes the state and joins the account's history
under the next version with the previous event's hash. Each movement of money is also one
ledger transaction (wallet_service.domain.ledger), written by wallet_service.domain.postings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from common.errors import FieldViolation, ValidationError
from common.ids import new_id
from common.money import MAX_AMOUNT_MINOR, Money
from wallet_service.domain import events as ev
from wallet_service.domain.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    CurrencyMismatch,
    HoldNotOpen,
    LimitExceeded,
    NotEnoughAvailable,
)
from wallet_service.domain.holds import OpenHold
from wallet_service.domain.ledger import AccountKind


class AccountStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Limits:
    """Checked before anything is written. Capped at what a 64-bit balance can hold."""

    max_operation_minor: int = MAX_AMOUNT_MINOR
    max_balance_minor: int = MAX_AMOUNT_MINOR

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "max_operation_minor", min(self.max_operation_minor, MAX_AMOUNT_MINOR)
        )
        object.__setattr__(self, "max_balance_minor", min(self.max_balance_minor, MAX_AMOUNT_MINOR))

    def check_operation(self, amount: Money) -> None:
        if amount.amount_minor > self.max_operation_minor:
            raise LimitExceeded(
                f"{amount} is above the limit of {Money(self.max_operation_minor, amount.currency)}"
                " per operation"
            )

    def check_balance(self, account_id: str, new_total_minor: int, currency: str) -> None:
        if new_total_minor > self.max_balance_minor:
            raise LimitExceeded(
                f"account {account_id} would exceed the balance limit of "
                f"{Money(self.max_balance_minor, currency)}"
            )


@dataclass(frozen=True, slots=True)
class Published:
    """An event on its way to the outbox, with the balances right after it."""

    recorded: ev.RecordedEvent
    currency: str
    total_minor: int
    held_minor: int


@dataclass
class Account:
    account_id: str
    owner_id: str
    currency: str
    kind: AccountKind = AccountKind.CUSTOMER
    status: AccountStatus = AccountStatus.OPEN
    total_minor: int = 0
    held_minor: int = 0
    version: int = 0
    last_hash: str = ev.GENESIS_HASH
    holds: dict[str, OpenHold] = field(default_factory=dict)
    open_ref: str = ""
    created_at: datetime | None = None
    _pending: list[ev.RecordedEvent] = field(default_factory=list, repr=False)
    _outbox: list[Published] = field(default_factory=list, repr=False)

    # -- history -------------------------------------------------------------------------

    @classmethod
    def open(cls, *, owner_id: str, currency: str, open_ref: str) -> Account:
        account = cls(account_id=new_id(), owner_id=owner_id, currency=currency, open_ref=open_ref)
        account._record(ev.AccountOpened(owner_id=owner_id, currency=currency))
        return account

    def replay(self, history: Iterable[ev.RecordedEvent]) -> None:
        for recorded in history:
            self._apply(recorded.event)
            self.version = recorded.version
            self.last_hash = recorded.hash

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "last_hash": self.last_hash,
            "status": self.status.value,
            "total_minor": self.total_minor,
            "held_minor": self.held_minor,
            "holds": [
                {
                    "hold_id": h.hold_id,
                    "amount_minor": h.amount_minor,
                    "expires_at": h.expires_at.isoformat(),
                    "reference": h.reference,
                }
                for h in self.holds.values()
            ],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.version = snapshot["version"]
        self.last_hash = snapshot["last_hash"]
        self.status = AccountStatus(snapshot["status"])
        self.total_minor = snapshot["total_minor"]
        self.held_minor = snapshot["held_minor"]
        self.holds = {
            h["hold_id"]: OpenHold(
                h["hold_id"],
                h["amount_minor"],
                datetime.fromisoformat(h["expires_at"]),
                h["reference"],
            )
            for h in snapshot["holds"]
        }

    def copy(self) -> Account:
        """The same state as an object of its own (no pending history, no outbox): changing
        either leaves the other as it was."""
        return Account(
            self.account_id,
            self.owner_id,
            self.currency,
            self.kind,
            self.status,
            self.total_minor,
            self.held_minor,
            self.version,
            self.last_hash,
            dict(self.holds),
            self.open_ref,
            self.created_at,
        )

    @property
    def new_events(self) -> list[ev.RecordedEvent]:
        """Recorded since loading and not yet stored."""
        return list(self._pending)

    def mark_stored(self) -> None:
        self._pending = []

    def pull_events(self) -> list[Published]:
        pulled, self._outbox = self._outbox, []
        return pulled

    def _record(self, event: ev.AccountEvent) -> None:
        recorded = ev.RecordedEvent.record(self.account_id, self.version + 1, event, self.last_hash)
        self._apply(event)
        self.version = recorded.version
        self.last_hash = recorded.hash
        self._pending.append(recorded)
        self._outbox.append(Published(recorded, self.currency, self.total_minor, self.held_minor))

    def _apply(self, event: ev.AccountEvent) -> None:
        match event:
            case ev.AccountOpened():
                self.status = AccountStatus.OPEN
            case ev.Credited() | ev.TransferredIn():
                self.total_minor += event.amount_minor
            case ev.Debited() | ev.TransferredOut():
                self.total_minor -= event.amount_minor
            case ev.HoldPlaced():
                self.held_minor += event.amount_minor
                self.holds[event.hold_id] = OpenHold(
                    event.hold_id,
                    event.amount_minor,
                    datetime.fromisoformat(event.expires_at),
                    event.reference,
                )
            case ev.HoldCaptured():
                self.held_minor -= self.holds.pop(event.hold_id).amount_minor
                self.total_minor -= event.captured_minor
            case ev.HoldReleased() | ev.HoldExpired():
                self.held_minor -= self.holds.pop(event.hold_id).amount_minor
            case ev.AccountFrozen():
                self.status = AccountStatus.FROZEN
            case ev.AccountUnfrozen():
                self.status = AccountStatus.OPEN
            case ev.AccountClosed():
                self.status = AccountStatus.CLOSED

    # -- balances ------------------------------------------------------------------------

    @property
    def total(self) -> Money:
        return Money(self.total_minor, self.currency)

    @property
    def held(self) -> Money:
        return Money(self.held_minor, self.currency)

    @property
    def available(self) -> Money:
        return Money(self.total_minor - self.held_minor, self.currency)

    # -- checks --------------------------------------------------------------------------

    def check_currency(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise CurrencyMismatch(
                f"account {self.account_id} holds {self.currency}, not {amount.currency}"
            )

    def _check_not_closed(self) -> None:
        if self.status is AccountStatus.CLOSED:
            raise AccountClosed(self.account_id)

    def _check_outgoing(self, amount: Money, limits: Limits) -> None:
        self._check_not_closed()
        if self.status is AccountStatus.FROZEN:
            raise AccountFrozen(self.account_id)
        self.check_currency(amount)
        limits.check_operation(amount)
        if amount.amount_minor > self.total_minor - self.held_minor:
            raise NotEnoughAvailable(self.account_id, self.available, amount)

    def check_incoming(self, amount: Money, limits: Limits) -> None:
        """Whether the account can take `amount` in; raises the reason when it cannot."""
        self._check_not_closed()
        self.check_currency(amount)
        limits.check_operation(amount)
        limits.check_balance(self.account_id, self.total_minor + amount.amount_minor, self.currency)

    # -- commands ------------------------------------------------------------------------

    def credit(
        self, transaction_id: str, amount: Money, operation_ref: str, limits: Limits
    ) -> None:
        """Frozen accounts still accept credits: money arriving must land somewhere."""
        self.check_incoming(amount, limits)
        self._record(ev.Credited(transaction_id, operation_ref, amount.amount_minor))

    def debit(self, transaction_id: str, amount: Money, operation_ref: str, limits: Limits) -> None:
        self._check_outgoing(amount, limits)
        self._record(ev.Debited(transaction_id, operation_ref, amount.amount_minor))

    def transfer_out(
        self, transaction_id: str, amount: Money, operation_ref: str, to: str, limits: Limits
    ) -> None:
        self._check_outgoing(amount, limits)
        self._record(ev.TransferredOut(transaction_id, operation_ref, amount.amount_minor, to))

    def transfer_in(
        self, transaction_id: str, amount: Money, operation_ref: str, source: str, limits: Limits
    ) -> None:
        self.check_incoming(amount, limits)
        self._record(ev.TransferredIn(transaction_id, operation_ref, amount.amount_minor, source))

    def place_hold(
        self,
        *,
        hold_id: str,
        amount: Money,
        expires_at: datetime,
        reference: str,
        operation_ref: str,
        limits: Limits,
    ) -> None:
        self._check_outgoing(amount, limits)
        self._record(
            ev.HoldPlaced(
                hold_id, operation_ref, amount.amount_minor, expires_at.isoformat(), reference
            )
        )

    def open_hold(self, hold_id: str, now: datetime) -> OpenHold:
        hold = self.holds.get(hold_id)
        if hold is None:
            raise HoldNotOpen(f"hold {hold_id} is no longer open")
        if hold.expires_at <= now:
            raise HoldNotOpen(f"hold {hold_id} expired at {hold.expires_at.isoformat()}")
        return hold

    def capture_hold(
        self,
        *,
        hold_id: str,
        amount: Money | None,
        transaction_id: str,
        operation_ref: str,
        now: datetime,
    ) -> Money:
        """Captures all of the hold or part of it; the rest is released. Returns the capture."""
        self._check_not_closed()
        if self.status is AccountStatus.FROZEN:
            raise AccountFrozen(self.account_id)
        hold = self.open_hold(hold_id, now)
        captured = hold.amount_minor if amount is None else amount.amount_minor
        if amount is not None:
            self.check_currency(amount)
        if captured > hold.amount_minor:
            raise ValidationError(
                FieldViolation(
                    "amount", f"exceeds the hold's {Money(hold.amount_minor, self.currency)}"
                )
            )
        self._record(
            ev.HoldCaptured(
                hold_id, transaction_id, operation_ref, captured, hold.amount_minor - captured
            )
        )
        return Money(captured, self.currency)

    def release_hold(self, hold_id: str, operation_ref: str) -> None:
        """Releasing needs no open account: it only gives the customer their money back."""
        hold = self.holds.get(hold_id)
        if hold is None:
            raise HoldNotOpen(f"hold {hold_id} is no longer open")
        self._record(ev.HoldReleased(hold_id, operation_ref, hold.amount_minor))

    def expire_holds(self, now: datetime) -> list[str]:
        expired = [h for h in self.holds.values() if h.expires_at <= now]
        for hold in expired:
            self._record(ev.HoldExpired(hold.hold_id, hold.amount_minor))
        return [h.hold_id for h in expired]

    def freeze(self, operation_ref: str) -> None:
        self._check_not_closed()
        if self.status is AccountStatus.OPEN:
            self._record(ev.AccountFrozen(operation_ref))

    def unfreeze(self, operation_ref: str) -> None:
        self._check_not_closed()
        if self.status is AccountStatus.FROZEN:
            self._record(ev.AccountUnfrozen(operation_ref))

    def close(self, operation_ref: str) -> None:
        if self.status is AccountStatus.CLOSED:
            return
        if self.total_minor or self.holds:
            raise AccountNotEmpty(
                f"account {self.account_id} still has {self.total} and {len(self.holds)} open"
                " holds; only an empty account closes"
            )
        self._record(ev.AccountClosed(operation_ref))
