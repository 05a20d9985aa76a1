"""Holds: money set aside on an account until it is captured, released or expires. The
aggregate keeps its open holds (`OpenHold`); the read model shows every hold, also closed
ones (`HoldView`), folded from the account's history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from common.money import Money
from wallet_service.domain import events as ev


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class OpenHold:
    hold_id: str
    amount_minor: int
    expires_at: datetime
    reference: str


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold as the read model shows it, also after it closed."""

    hold_id: str
    account_id: str
    amount: Money
    captured: Money
    status: HoldStatus
    expires_at: datetime
    reference: str


def hold_views(
    account_id: str, currency: str, history: Iterable[ev.RecordedEvent]
) -> dict[str, HoldView]:
    """Every hold's final state, folded from an account's history (rebuilds the read model)."""
    views: dict[str, HoldView] = {}
    for recorded in history:
        apply_to_hold_views(views, account_id, currency, recorded.event)
    return views


def apply_to_hold_views(
    views: dict[str, HoldView], account_id: str, currency: str, event: ev.AccountEvent
) -> HoldView | None:
    """Updates `views` with one event; returns the hold it changed, if any."""
    match event:
        case ev.HoldPlaced():
            view = HoldView(
                event.hold_id,
                account_id,
                Money(event.amount_minor, currency),
                Money(0, currency),
                HoldStatus.OPEN,
                datetime.fromisoformat(event.expires_at),
                event.reference,
            )
        case ev.HoldCaptured():
            old = views[event.hold_id]
            view = _closed(old, HoldStatus.CAPTURED, event.captured_minor)
        case ev.HoldReleased():
            view = _closed(views[event.hold_id], HoldStatus.RELEASED, 0)
        case ev.HoldExpired():
            view = _closed(views[event.hold_id], HoldStatus.EXPIRED, 0)
        case _:
            return None
    views[view.hold_id] = view
    return view


def _closed(view: HoldView, status: HoldStatus, captured_minor: int) -> HoldView:
    return HoldView(
        view.hold_id,
        view.account_id,
        view.amount,
        Money(captured_minor, view.amount.currency),
        status,
        view.expires_at,
        view.reference,
    )
