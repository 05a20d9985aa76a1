"""What a slow run keeps of the payments still open, read from a real payment database."""

from __future__ import annotations

import uuid

import pytest

from chaos import observe
from common import db
from common.config import Settings
from common.money import Money
from payment_service.adapters.uow import PaymentUnitOfWork
from payment_service.bootstrap import DATABASE
from payment_service.domain.model import Payment
from payment_service.domain.requests import DepositRequest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ACCOUNT = "0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1"


async def stored(settings: Settings, *payments: Payment) -> None:
    """The payments committed to the real payment database, as the service would."""
    engine = db.create_engine(DATABASE.url(settings), pool_size=1)
    try:
        async with PaymentUnitOfWork(engine) as uow:
            for payment in payments:
                await uow.payments.add(payment)
            await uow.commit()
    finally:
        await engine.dispose()


async def test_open_payments_come_with_their_kind_status_key_and_steps(
    migrated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observe, "OPEN_LISTED", 100_000)  # other tests' open payments too
    key = f"obs-{uuid.uuid4()}"
    payment = Payment.deposit(DepositRequest(key, ACCOUNT, Money(2500, "USD"), "pm_card_ok"))
    payment.mark_pending(f"op-{uuid.uuid4()}")
    settled = Payment.deposit(
        DepositRequest(f"obs-{uuid.uuid4()}", ACCOUNT, Money(100, "USD"), "pm_card_ok")
    )
    settled.apply_charge_failed(operation_id="op", reason="declined")
    await stored(migrated, payment, settled)

    found = {p.payment_id: p for p in await observe.open_now(migrated)}

    assert settled.payment_id not in found
    seen = found[payment.payment_id]
    assert (seen.kind, seen.status, seen.idempotency_key) == ("deposit", "pending", key)
    assert 0 < len(seen.steps) <= observe.LAST_STEPS
    assert seen.steps[-1].split()[1] == "status.pending"


async def test_payments_the_resume_sweep_moved_on_come_with_all_their_steps(
    migrated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observe, "OPEN_LISTED", 100_000)
    stalled = Payment.deposit(
        DepositRequest(f"obs-{uuid.uuid4()}", ACCOUNT, Money(700, "USD"), "pm_card_ok")
    )
    stalled.note_resumed()
    stalled.mark_pending(f"op-{uuid.uuid4()}")
    moving = Payment.deposit(
        DepositRequest(f"obs-{uuid.uuid4()}", ACCOUNT, Money(700, "USD"), "pm_card_ok")
    )
    await stored(migrated, stalled, moving)

    found = {p.payment_id: p for p in await observe.resumed(migrated)}

    assert moving.payment_id not in found
    events = [line.split()[1] for line in found[stalled.payment_id].steps]
    assert events[-2:] == ["saga.resumed", "status.pending"]
