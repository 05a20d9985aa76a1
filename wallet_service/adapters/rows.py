"""Rows read back into the domain: an account's identity and read model, a hold, a journal
entry, an FX rate, and a transaction's conversion as the journal stores it (JSON)."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Any

from common.money import Money
from wallet_service.domain.account import Account, AccountStatus
from wallet_service.domain.fx import Conversion, FxRate
from wallet_service.domain.holds import HoldStatus, HoldView
from wallet_service.domain.ledger import AccountKind, Entry


def identity(row: Any) -> Account:
    return Account(
        account_id=str(row.account_id),
        owner_id=row.owner_id,
        currency=row.currency,
        kind=AccountKind(row.kind),
        open_ref=row.open_ref,
        created_at=row.created_at,
    )


def projected(row: Any) -> Account:
    """An account as its read model shows it: balances, no history."""
    account = identity(row)
    account.status = AccountStatus(row.status)
    account.total_minor = row.total_minor
    account.held_minor = row.held_minor
    account.version = row.version
    return account


def hold_view(row: Any) -> HoldView:
    return HoldView(
        hold_id=str(row.hold_id),
        account_id=str(row.account_id),
        amount=Money(row.amount_minor, row.currency),
        captured=Money(row.captured_minor, row.currency),
        status=HoldStatus(row.status),
        expires_at=row.expires_at,
        reference=row.reference,
    )


def conversion_to_json(conversion: Conversion | None) -> dict[str, Any] | None:
    if conversion is None:
        return None
    rate = conversion.rate
    return {
        "base": rate.base,
        "quote": rate.quote,
        "numerator": str(rate.rate.numerator),
        "denominator": str(rate.rate.denominator),
        "source": rate.source,
        "as_of": rate.as_of.isoformat(),
        "source_minor": conversion.source.amount_minor,
        "target_minor": conversion.target.amount_minor,
    }


def conversion_from_json(data: dict[str, Any] | None) -> Conversion | None:
    if data is None:
        return None
    rate = FxRate(
        base=data["base"],
        quote=data["quote"],
        rate=Fraction(int(data["numerator"]), int(data["denominator"])),
        source=data["source"],
        as_of=datetime.fromisoformat(data["as_of"]),
    )
    return Conversion(
        rate, Money(data["source_minor"], rate.base), Money(data["target_minor"], rate.quote)
    )


def entry(row: Any) -> Entry:
    """A ledger_entries row."""
    return Entry(
        str(row.entry_id),
        str(row.account_id),
        Money(row.amount_minor, row.currency),
        row.balance_after_minor,
    )


def fx_rate(row: Any) -> FxRate:
    return FxRate(
        row.base,
        row.quote,
        Fraction(int(row.numerator), int(row.denominator)),
        row.source,
        row.as_of,
    )
