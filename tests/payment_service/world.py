"""The payment service's use cases wired on fakes, as bootstrap wires them on the real
adapters, for service-layer and entrypoint unit tests."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from common.errors import DependencyUnavailable
from common.money import Money
from payment_service.service_layer.accounts import AccountDirectory
from payment_service.service_layer.create import IN_FLIGHT_WAIT_S, PaymentRequests
from payment_service.service_layer.handlers import GatewayEventHandlers
from payment_service.service_layer.queries import PaymentQueries
from payment_service.service_layer.recovery import Recovery
from payment_service.service_layer.saga import Saga
from tests.payment_service.fakes import FakeGateway, FakeStore, FakeUnitOfWork, FakeWallet

ACCOUNT = "0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1"


@dataclass(frozen=True)
class Process:
    """The use cases of one payment-service process (they share its account cache and the
    steps an outage deferred)."""

    requests: PaymentRequests
    saga: Saga
    recovery: Recovery
    queries: PaymentQueries


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

    def process(self, *, in_flight_wait_s: float = IN_FLIGHT_WAIT_S) -> Process:
        """A new process over the same database, wallet and gateway."""
        accounts = AccountDirectory(self.wallet)
        queries = PaymentQueries(uow=self.uow, accounts=accounts)
        saga = Saga(uow=self.uow, wallet=self.wallet, gateway=self.gateway, queries=queries)
        return Process(
            requests=PaymentRequests(
                uow=self.uow,
                accounts=accounts,
                queries=queries,
                saga=saga,
                in_flight_wait_s=in_flight_wait_s,
            ),
            saga=saga,
            recovery=Recovery(uow=self.uow, gateway=self.gateway, saga=saga),
            queries=queries,
        )

    @property
    def requests(self) -> PaymentRequests:
        return self.process().requests

    @property
    def saga(self) -> Saga:
        return self.process().saga

    @property
    def recovery(self) -> Recovery:
        return self.process().recovery

    @property
    def queries(self) -> PaymentQueries:
        return self.process().queries

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
        """The saga step, as a deposit's `payment.initiated` event triggers it: with the
        amount and payment method the event carries."""
        payment = await self.queries.get_payment(payment_id)
        await self.saga.charge_deposit(payment_id, payment.amount, payment.payment_method)

    async def create(self, key: str = "k1", amount: int = 1000, currency: str = "USD") -> str:
        payment = await self.requests.create_deposit(
            idempotency_key=key,
            account_id=ACCOUNT,
            amount=Money(amount, currency),
            payment_method="pm_card_ok",
        )
        return payment.payment_id
