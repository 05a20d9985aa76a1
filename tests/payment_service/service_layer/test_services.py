from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest

from common.errors import DependencyUnavailable, IdempotencyConflict, NotFound, ValidationError
from common.money import Money
from payment_service.domain.events import ReviewRequested
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from payment_service.service_layer.handlers import GatewayEventHandlers
from payment_service.service_layer.services import PaymentService
from tests.payment_service.fakes import FakeGateway, FakeStore, FakeUnitOfWork, FakeWallet

ACCOUNT = "0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1"
S = PaymentStatus


@dataclass
class World:
    store: FakeStore = field(default_factory=FakeStore)
    wallet: FakeWallet = field(default_factory=FakeWallet)
    gateway: FakeGateway = field(default_factory=FakeGateway)
    published: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wallet.accounts[ACCOUNT] = "USD"

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.store, self.published)

    @property
    def service(self) -> PaymentService:
        return PaymentService(uow=self.uow, wallet=self.wallet, gateway=self.gateway)

    @property
    def handlers(self) -> GatewayEventHandlers:
        return GatewayEventHandlers(uow=self.uow, wallet=self.wallet)

    async def deposit(self, key: str = "k1", amount: int = 1000, currency: str = "USD") -> str:
        """CreateDeposit, then the saga step its `payment.initiated` event triggers."""
        payment_id = await self.create(key, amount, currency)
        with contextlib.suppress(DependencyUnavailable):
            await self.charge(payment_id)
        return payment_id

    async def charge(self, payment_id: str) -> None:
        """The saga step, as the `payment.initiated` event triggers it."""
        await self.service.ask_provider(payment_id)

    async def create(self, key: str = "k1", amount: int = 1000, currency: str = "USD") -> str:
        payment = await self.service.create_deposit(
            idempotency_key=key,
            account_id=ACCOUNT,
            amount=Money(amount, currency),
            payment_method="pm_card_ok",
        )
        return payment.payment_id


async def test_create_deposit_answers_initiated_without_calling_the_gateway() -> None:
    world = World()
    payment_id = await world.create()
    assert (await world.service.get_payment(payment_id)).status is S.INITIATED
    assert world.gateway.calls == []
    assert [e.to_status for e in world.published] == ["initiated"]  # type: ignore[attr-defined]


async def test_the_saga_step_charges_once_and_records_pending() -> None:
    world = World()
    payment_id = await world.deposit()
    payment = await world.service.get_payment(payment_id)
    assert payment.status is S.PENDING
    assert world.gateway.calls == [f"{payment_id}:charge"]
    # A redelivered payment.initiated finds the payment past its charge step: no second call.
    await world.charge(payment_id)
    assert world.gateway.calls == [f"{payment_id}:charge"]
    assert [c.to_status for c in await world.service.history(payment_id)] == [
        S.INITIATED,
        S.PENDING,
    ]


async def test_an_unknown_provider_outcome_is_retried_not_failed() -> None:
    world = World()
    world.gateway.answer = ProviderAnswer.UNKNOWN
    payment_id = await world.create()
    with pytest.raises(DependencyUnavailable):
        await world.charge(payment_id)
    assert (await world.service.get_payment(payment_id)).status is S.INITIATED


async def test_the_account_currency_is_looked_up_once() -> None:
    world = World()
    service = world.service
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


async def test_unreachable_gateway_leaves_it_initiated_and_a_retry_resumes() -> None:
    world = World()
    world.gateway.unavailable = True
    payment_id = await world.create()
    with pytest.raises(DependencyUnavailable):
        await world.charge(payment_id)
    assert (await world.service.get_payment(payment_id)).status is S.INITIATED
    world.gateway.unavailable = False
    await world.charge(payment_id)  # the event, redelivered
    assert (await world.service.get_payment(payment_id)).status is S.PENDING


async def test_gateway_refusal_fails_the_payment() -> None:
    world = World()
    world.gateway.answer = ProviderAnswer.DECLINED
    payment = await world.service.get_payment(await world.deposit())
    assert payment.status is S.FAILED
    assert payment.failure_reason == "card_declined"


async def test_charge_succeeded_credits_once_even_when_delivered_twice() -> None:
    world = World()
    payment_id = await world.deposit()
    for _ in range(2):
        await world.handlers.charge_succeeded(
            event_id="e1", payment_id=payment_id, operation_id="op"
        )
    assert world.wallet.credits == {f"{payment_id}:credit": (ACCOUNT, Money(1000, "USD"))}
    history = await world.service.history(payment_id)
    assert [c.to_status for c in history] == [S.INITIATED, S.PENDING, S.COMPLETED]


async def test_charge_succeeded_before_pending_was_recorded_still_completes() -> None:
    world = World()
    world.gateway.unavailable = True
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    assert (await world.service.get_payment(payment_id)).status is S.COMPLETED


async def test_wallet_outage_is_retried_not_failed() -> None:
    world = World()
    payment_id = await world.deposit()
    world.wallet.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await world.handlers.charge_succeeded(
            event_id="e1", payment_id=payment_id, operation_id="op"
        )
    assert (await world.service.get_payment(payment_id)).status is S.PENDING


async def test_credit_that_can_never_apply_starts_a_refund() -> None:
    world = World()
    payment_id = await world.deposit()
    world.wallet.accounts.clear()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    assert (await world.service.get_payment(payment_id)).status is S.REFUNDING


async def test_a_late_success_on_a_failed_payment_publishes_a_review_request() -> None:
    world = World()
    world.gateway.answer = ProviderAnswer.DECLINED
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    assert (await world.service.get_payment(payment_id)).status is S.FAILED
    assert world.wallet.credits == {}  # never credited: an operator decides
    assert isinstance(world.published[-1], ReviewRequested)


async def test_late_failure_never_overwrites_a_completed_payment() -> None:
    world = World()
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    await world.handlers.charge_failed(
        event_id="e2", payment_id=payment_id, operation_id="op", reason="card_declined"
    )
    assert (await world.service.get_payment(payment_id)).status is S.COMPLETED


async def test_events_for_unknown_payments_are_ignored() -> None:
    world = World()
    await world.handlers.charge_succeeded(
        event_id="e1", payment_id="8c0a0f7e-1111-4111-8111-111111111111", operation_id="op"
    )
    assert world.wallet.credits == {}
