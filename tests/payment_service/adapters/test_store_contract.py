"""One contract, two stores: the SQL repository on a real PostgreSQL and the in-memory fake
the service-layer tests use. A fake that ignored versions, unique keys or uncommitted work
would pass those tests while the real store failed them; here it fails with the real one's
cases (the eventsourcing pattern of one abstract suite per recorder)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from common.config import Settings
from common.errors import ConcurrentUpdate
from common.money import Money
from payment_service.domain.model import DepositRequest, Payment, PaymentStatus
from payment_service.service_layer.ports import UnitOfWork
from tests.payment_service.fakes import FakeStore, FakeUnitOfWork

UowFactory = Callable[[], UnitOfWork]


def deposit(*, key: str = "", account: str = "") -> Payment:
    return Payment.deposit(
        DepositRequest(
            idempotency_key=key or f"k-{uuid.uuid4()}",
            account_id=account or str(uuid.uuid4()),
            amount=Money(1500, "USD"),
            payment_method="pm_card_ok",
        )
    )


async def added(uow_factory: UowFactory, payment: Payment) -> Payment:
    async with uow_factory() as uow:
        await uow.payments.add(payment)
        await uow.commit()
    return payment


class StoreContract:
    """The cases; subclasses provide `uow` (a unit-of-work factory fixture)."""

    async def test_an_added_payment_is_found_by_id_and_key_with_its_history(
        self, uow: UowFactory
    ) -> None:
        payment = await added(uow, deposit())
        async with uow() as u:
            by_id = await u.payments.get(payment.payment_id)
            by_key = await u.payments.by_idempotency_key(payment.idempotency_key)
            history = await u.payments.history(payment.payment_id)
        assert by_id is not None
        assert by_key is not None
        assert by_id.payment_id == by_key.payment_id == payment.payment_id
        assert (by_id.status, by_id.version, by_id.amount) == (
            PaymentStatus.INITIATED,
            1,
            Money(1500, "USD"),
        )
        assert [c.to_status for c in history] == [PaymentStatus.INITIATED]

    async def test_work_not_committed_is_not_kept(self, uow: UowFactory) -> None:
        payment = deposit()
        async with uow() as u:
            await u.payments.add(payment)
        async with uow() as u:
            assert await u.payments.get(payment.payment_id) is None

    async def test_a_second_payment_with_the_same_key_is_refused(self, uow: UowFactory) -> None:
        first = await added(uow, deposit())
        with pytest.raises(ConcurrentUpdate):
            await added(uow, deposit(key=first.idempotency_key))

    async def test_a_save_based_on_a_stale_read_is_refused(self, uow: UowFactory) -> None:
        payment = await added(uow, deposit())
        async with uow() as slow:
            stale = await slow.payments.get(payment.payment_id)
            assert stale is not None
            async with uow() as fast:
                fresh = await fast.payments.get(payment.payment_id)
                assert fresh is not None
                fresh.mark_pending("op-1")
                await fast.payments.save(fresh)
                await fast.commit()
            stale.fail("declined")
            with pytest.raises(ConcurrentUpdate):
                await slow.payments.save(stale)
        async with uow() as u:
            kept = await u.payments.get(payment.payment_id)
        assert kept is not None
        assert kept.status is PaymentStatus.PENDING

    async def test_history_keeps_every_change_in_order(self, uow: UowFactory) -> None:
        payment = await added(uow, deposit())
        async with uow() as u:
            loaded = await u.payments.get(payment.payment_id, for_update=True)
            assert loaded is not None
            loaded.mark_pending("op-1")
            loaded.complete()
            await u.payments.save(loaded)
            await u.commit()
        async with uow() as u:
            history = await u.payments.history(payment.payment_id)
        assert [(c.sequence, c.to_status) for c in history] == [
            (1, PaymentStatus.INITIATED),
            (2, PaymentStatus.PENDING),
            (3, PaymentStatus.COMPLETED),
        ]

    async def test_an_event_is_marked_processed_once(self, uow: UowFactory) -> None:
        event_id = str(uuid.uuid4())
        async with uow() as u:
            assert await u.payments.mark_processed("c", event_id)
            await u.commit()
        async with uow() as u:
            assert not await u.payments.mark_processed("c", event_id)
            assert await u.payments.mark_processed("other-consumer", event_id)

    async def test_listing_by_account_is_newest_first_and_pages(self, uow: UowFactory) -> None:
        account = str(uuid.uuid4())
        payments = [await added(uow, deposit(account=account)) for _ in range(3)]
        await added(uow, deposit())  # another account's
        async with uow() as u:
            first = await u.payments.list(account_id=account, limit=2, before_seq=None)
            rest = await u.payments.list(account_id=account, limit=2, before_seq=first[-1][0])
        listed = [p.payment_id for _, p in first + rest]
        assert listed == [p.payment_id for p in reversed(payments)]


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def uow(self) -> UowFactory:
        store, published = FakeStore(), []

        def factory() -> UnitOfWork:
            return FakeUnitOfWork(store, published)

        return factory


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
class TestSqlStore(StoreContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def uow(self, migrated: Settings) -> AsyncIterator[UowFactory]:
        from common import db
        from payment_service.adapters.uow import PaymentUnitOfWork
        from payment_service.bootstrap import DATABASE

        engine = db.create_engine(DATABASE.url(migrated), pool_size=2)

        def factory() -> UnitOfWork:
            return PaymentUnitOfWork(engine)

        yield factory
        await engine.dispose()
