"""Creating a deposit on fakes: one commit, no provider call on the request path, the key's
replay, and the checks on the account before anything is written."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import IdempotencyConflict, NotFound, ValidationError
from common.money import Money
from payment_service.domain.status import PaymentStatus
from tests.payment_service.world import ACCOUNT, World

S = PaymentStatus


async def test_create_deposit_answers_initiated_without_calling_the_gateway() -> None:
    world = World()
    payment_id = await world.create()
    assert (await world.queries.get_payment(payment_id)).status is S.INITIATED
    assert world.gateway.calls == []
    assert [e.to_status for e in world.published] == ["initiated"]  # type: ignore[attr-defined]  # events untyped


async def test_the_account_currency_is_looked_up_once() -> None:
    world = World()
    service = world.requests
    for key in ("k1", "k2"):
        await service.create_deposit(
            idempotency_key=key,
            account_id=ACCOUNT,
            amount=Money(100, "USD"),
            payment_method="pm_card_ok",
        )
    assert world.wallet.lookups == 1


async def test_same_key_returns_the_same_payment_and_starts_nothing_new() -> None:
    world = World()
    first = await world.deposit()
    published = len(world.published)
    second = await world.create()
    assert first == second
    assert len(world.store.rows) == 1
    assert len(world.published) == published  # no second payment.initiated, so no charge


async def test_same_key_with_other_amount_is_refused() -> None:
    world = World()
    await world.deposit(amount=1000)
    with pytest.raises(IdempotencyConflict):
        await world.deposit(amount=2000)


async def test_unknown_account_leaves_nothing_behind() -> None:
    world = World()
    world.wallet.accounts.clear()
    with pytest.raises(NotFound):
        await world.deposit()
    assert world.store.rows == {}
    assert world.gateway.calls == []


async def test_currency_other_than_the_accounts_is_invalid() -> None:
    world = World()
    with pytest.raises(ValidationError) as caught:
        await world.deposit(currency="EUR")
    assert caught.value.violations[0].field == "amount.currency"
    assert world.store.rows == {}


async def test_creates_arriving_together_share_a_commit_and_a_repeated_key_one_payment() -> None:
    world = World()
    keys = ["a", "b", "c", "a", "d"]  # "a" twice: a client's retry racing its first try
    created = await asyncio.gather(*(world.create(key=key) for key in keys))
    assert created[0] == created[3]
    assert len(set(created)) == 4
    assert len(world.store.rows) == 4
    assert [e.to_status for e in world.published] == ["initiated"] * 4  # type: ignore[attr-defined]  # events untyped


async def test_a_refused_create_in_a_batch_answers_only_its_caller() -> None:
    world = World()
    await world.deposit(key="taken", amount=1000)
    answers = await asyncio.gather(
        world.deposit(key="taken", amount=2000),  # the key's first request was another amount
        world.deposit(key="fresh-1"),
        world.deposit(key="fresh-2"),
        return_exceptions=True,
    )
    assert isinstance(answers[0], IdempotencyConflict)
    assert not any(isinstance(answer, BaseException) for answer in answers[1:])
    assert len(world.store.rows) == 3
