"""One contract, two stores: the SQL repository on a real PostgreSQL and the in-memory fake
the service-layer tests use. A fake that ignored versions, unique keys or uncommitted work
would pass those tests while the real store failed them; here it fails with the real one's
cases (the eventsourcing pattern of one abstract suite per recorder)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from common.config import Settings
from common.errors import ConcurrentUpdate
from common.money import Money
from payment_service.domain.errors import ReviewAlreadyResolved
from payment_service.domain.model import Payment
from payment_service.domain.requests import (
    ClaimAnswer,
    DepositRequest,
    IdempotencyClaim,
    PaymentFilter,
    RefundRequest,
    WithdrawalRequest,
)
from payment_service.domain.review import Decision, Resolution, ReviewReason, ReviewStatus
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentKind, PaymentStatus
from payment_service.service_layer.ports import UnitOfWork
from payment_service.service_layer.steps import Steps
from tests.payment_service.fakes import FakeStore, FakeUnitOfWork

UowFactory = Callable[[], UnitOfWork]


def deposit(*, account: str = "") -> Payment:
    return Payment.deposit(
        DepositRequest(
            idempotency_key=f"k-{uuid.uuid4()}",
            account_id=account or str(uuid.uuid4()),
            amount=Money(1500, "USD"),
            payment_method="pm_card_ok",
        )
    )


def held_withdrawal() -> Payment:
    """A withdrawal with its funds held: the provider not asked yet, so it can still be
    cancelled or have its recovery point recorded (a deposit has it from its creation)."""
    payment = Payment.withdrawal(
        WithdrawalRequest(
            idempotency_key=f"k-{uuid.uuid4()}",
            account_id=str(uuid.uuid4()),
            amount=Money(1500, "USD"),
            destination="acct_ok",
        )
    )
    payment.record_hold("hold-1")
    return payment


def in_review() -> Payment:
    """A deposit whose compensation refund failed three times: it asks for a review case."""
    payment = deposit()
    payment.mark_pending("op-1")
    payment.apply_charge_succeeded(operation_id="op-1", credited=False, credit_refused="closed")
    for attempt in range(3):
        payment.compensation_call()
        payment.record_compensation_answer(
            ProviderAnswer.DECLINED, operation_id=f"r{attempt}", reason="refund_declined"
        )
    return payment


def decided(resolution: Resolution = Resolution.REFUNDED) -> Decision:
    return Decision(resolution, "note", "alice", datetime.now(UTC))


async def added(uow_factory: UowFactory, payment: Payment) -> Payment:
    async with uow_factory() as uow:
        await uow.payments.add(payment)
        await uow.commit()
    return payment


class StoreContract:
    """The cases; subclasses provide `uow` (a unit-of-work factory fixture)."""

    async def test_an_added_payment_is_found_with_its_history(self, uow: UowFactory) -> None:
        payment = await added(uow, deposit())
        async with uow() as u:
            by_id = await u.payments.get(payment.payment_id)
            history = await u.payments.history(payment.payment_id)
        assert by_id is not None
        assert by_id.payment_id == payment.payment_id
        assert (by_id.status, by_id.version, by_id.amount) == (
            PaymentStatus.INITIATED,
            1,
            Money(1500, "USD"),
        )
        assert [c.to_status for c in history] == [PaymentStatus.INITIATED]

    @pytest.mark.parametrize("in_one", [False, True], ids=["add_claimed+commit", "create"])
    async def test_creates_claim_their_keys_and_only_those_with_a_free_key_are_added(
        self, uow: UowFactory, in_one: bool
    ) -> None:
        taken = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f0", str(uuid.uuid4()), 1)
        async with uow() as u:
            assert await u.payments.claim_key(taken) is None
            await u.commit()
        payments = [deposit(), deposit(), held_withdrawal()]
        claims = [
            IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", payments[0].payment_id, 1),
            IdempotencyClaim("alice", taken.key, "f9", payments[1].payment_id, 1),
            IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f2", payments[2].payment_id),
        ]
        async with uow() as u:
            if in_one:
                priors = await u.create(claims, payments)
            else:
                priors = await u.payments.add_claimed(claims, payments)
                await u.commit()
        assert (priors[0], priors[2]) == (None, None)
        assert priors[1] is not None
        assert (priors[1].payment_id, priors[1].fingerprint) == (taken.payment_id, "f0")
        async with uow() as u:
            found = [await u.payments.get(p.payment_id) for p in payments]
            keys = [await u.payments.claimed("alice", c.key) for c in claims]
            history = await u.payments.history(payments[2].payment_id)
            trail = [s.event_type for s in await u.payments.steps(payments[2].payment_id)]
        assert [p is not None for p in found] == [True, False, True]
        assert found[2] is not None
        assert found[2].saga.hold_id == "hold-1"
        assert [k.payment_id if k else None for k in keys] == [
            payments[0].payment_id,
            taken.payment_id,
            payments[2].payment_id,
        ]
        assert [c.to_status for c in history] == [PaymentStatus.INITIATED]
        assert "hold.placed" in trail

    async def test_a_batch_lock_records_its_payments_events_and_leaves_the_seen_ones_out(
        self, uow: UowFactory
    ) -> None:
        payments = [await added(uow, deposit()) for _ in range(3)]
        ids = [p.payment_id for p in payments]
        gone = str(uuid.uuid4())
        seen, new = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
        async with uow() as u:
            assert await u.payments.mark_processed("c", seen)
            await u.commit()
        reactions = {
            ids[0]: ("c", seen),
            ids[1]: ("c", new[0]),
            ids[2]: ("other", new[1]),
            gone: ("c", new[2]),  # no such payment: its event is not recorded
        }
        async with uow() as u:
            locked, first_seen = await u.payments.lock_many([*ids, gone], reactions)
            await u.commit()
        assert sorted(locked) == sorted(ids)
        assert first_seen == {("c", new[0]), ("other", new[1])}
        async with uow() as u:
            assert not await u.payments.mark_processed("c", new[0])
            assert not await u.payments.mark_processed("other", new[1])
            assert await u.payments.mark_processed("c", new[2])
            assert await u.payments.mark_processed("other", new[0])
        async with uow() as u:  # none of them: a plain lock
            locked, first_seen = await u.payments.lock_many(ids, {})
            await u.commit()
        assert (sorted(locked), first_seen) == (sorted(ids), set())

    async def test_events_recorded_by_a_batch_lock_are_not_kept_uncommitted(
        self, uow: UowFactory
    ) -> None:
        payment = await added(uow, deposit())
        event = str(uuid.uuid4())
        async with uow() as u:
            _, first_seen = await u.payments.lock_many(
                [payment.payment_id], {payment.payment_id: ("c", event)}
            )
        assert first_seen == {("c", event)}
        async with uow() as u:
            assert await u.payments.mark_processed("c", event)

    async def test_many_are_saved_at_once_with_their_transitions_and_steps(
        self, uow: UowFactory
    ) -> None:
        payments = [await added(uow, deposit()) for _ in range(3)]
        async with uow() as u:
            locked = await u.payments.get_many([p.payment_id for p in payments], for_update=True)
            for payment in locked.values():
                payment.begin_provider_call()
                payment.record_provider_answer(
                    ProviderAnswer.ACCEPTED, operation_id=f"op-{payment.payment_id}", reason=""
                )
            await u.payments.save_many(list(locked.values()))
            await u.commit()
        async with uow() as u:
            for payment in payments:
                stored = await u.payments.get(payment.payment_id)
                assert stored is not None
                assert (stored.status, stored.version) == (PaymentStatus.PENDING, 2)
                assert stored.gateway_operation_id == f"op-{payment.payment_id}"
                history = await u.payments.history(payment.payment_id)
                assert [c.to_status for c in history] == [
                    PaymentStatus.INITIATED,
                    PaymentStatus.PENDING,
                ]
                trail = [s.event_type for s in await u.payments.steps(payment.payment_id)]
                assert trail[-3:] == ["charge.requested", "charge.accepted", "status.pending"]

    async def test_a_batch_save_with_one_payment_moved_meanwhile_writes_nothing(
        self, uow: UowFactory
    ) -> None:
        payments = [await added(uow, held_withdrawal()) for _ in range(2)]
        async with uow() as u:
            stale = await u.payments.get_many([p.payment_id for p in payments])
        async with uow() as u:  # another writer moves the second one first
            moved = await u.payments.get(payments[1].payment_id, for_update=True)
            assert moved is not None
            moved.cancel()
            await u.payments.save(moved)
            await u.commit()
        async with uow() as u:
            for payment in stale.values():
                payment.cancel()
            with pytest.raises(ConcurrentUpdate):
                await u.payments.save_many(list(stale.values()))
        async with uow() as u:
            first = await u.payments.get(payments[0].payment_id)
            assert first is not None
            assert first.status is PaymentStatus.INITIATED

    async def test_many_are_read_at_once_and_the_unknown_left_out(self, uow: UowFactory) -> None:
        payments = [await added(uow, deposit()) for _ in range(3)]
        wanted = [p.payment_id for p in payments] + [str(uuid.uuid4())]
        async with uow() as u:
            locked = await u.payments.get_many(wanted, for_update=True)
            await u.commit()
        assert sorted(locked) == sorted(p.payment_id for p in payments)
        assert all(locked[p.payment_id].version == 1 for p in payments)

    async def test_steps_arriving_together_commit_together_each_on_its_own(
        self, uow: UowFactory
    ) -> None:
        payments = [await added(uow, held_withdrawal()) for _ in range(6)]
        refused = payments[3].payment_id

        def begin(payment: Payment) -> str:
            if payment.payment_id == refused:
                payment.begin_provider_call()
                raise ConcurrentUpdate("this one lost a race every time")
            call = payment.begin_provider_call()
            assert call is not None
            return call.idempotency_key

        steps = Steps(uow)
        answers = await asyncio.gather(
            *(steps.step(p.payment_id, begin) for p in payments), return_exceptions=True
        )
        assert isinstance(answers[3], ConcurrentUpdate)
        assert [a for i, a in enumerate(answers) if i != 3] == [
            f"{p.payment_id}:payout" for i, p in enumerate(payments) if i != 3
        ]
        async with uow() as u:
            stored = await u.payments.get_many([p.payment_id for p in payments])
            trails = {p.payment_id: await u.payments.steps(p.payment_id) for p in payments}
        for payment in payments:
            trail = trails[payment.payment_id]
            requested = [s for s in trail if s.event_type == "payout.requested"]
            if payment.payment_id == refused:
                assert (stored[refused].version, stored[refused].saga.provider_call) == (1, "")
                assert requested == []
            else:
                assert stored[payment.payment_id].saga.provider_call == "payout"
                assert len(requested) == 1

    async def test_steps_answering_their_keys_together_answer_each_key(
        self, uow: UowFactory
    ) -> None:
        payments = [await added(uow, held_withdrawal()) for _ in range(3)]
        claims = [
            IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", p.payment_id) for p in payments
        ]
        async with uow() as u:
            for claim in claims:
                await u.payments.claim_key(claim)
            await u.commit()

        def cancelled(payment: Payment) -> Payment:
            payment.cancel()
            return payment

        steps = Steps(uow)
        answers = await asyncio.gather(
            *(
                steps.step(p.payment_id, cancelled, answer=("", "") if i else ("NO", "refused"))
                for i, p in enumerate(payments)
            )
        )
        async with uow() as u:
            stored = [await u.payments.claimed("alice", c.key) for c in claims]
        assert [(s.response_version, s.error_reason) for s in stored if s] == [
            (answers[0].version, "NO"),
            (answers[1].version, ""),
            (answers[2].version, ""),
        ]

    async def test_work_not_committed_is_not_kept(self, uow: UowFactory) -> None:
        payment = deposit()
        async with uow() as u:
            await u.payments.add(payment)
        async with uow() as u:
            assert await u.payments.get(payment.payment_id) is None

    async def test_a_key_is_claimed_once_per_caller(self, uow: UowFactory) -> None:
        key = f"k-{uuid.uuid4()}"
        first = IdempotencyClaim("alice", key, "f1", str(uuid.uuid4()))
        async with uow() as u:
            assert await u.payments.claim_key(first) is None
            await u.commit()
        async with uow() as u:
            again = IdempotencyClaim("alice", key, "f2", str(uuid.uuid4()))
            assert await u.payments.claim_key(again) == first
            assert (
                await u.payments.claim_key(IdempotencyClaim("bob", key, "f3", str(uuid.uuid4())))
                is None
            )

    async def test_an_uncommitted_claim_is_not_kept(self, uow: UowFactory) -> None:
        claim = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", str(uuid.uuid4()))
        async with uow() as u:
            await u.payments.claim_key(claim)
        async with uow() as u:
            assert await u.payments.claim_key(claim) is None

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

    async def test_the_audit_trail_keeps_every_step_in_order(self, uow: UowFactory) -> None:
        payment = await added(uow, deposit())
        async with uow() as u:
            loaded = await u.payments.get(payment.payment_id, for_update=True)
            assert loaded is not None
            loaded.record_provider_answer(ProviderAnswer.ACCEPTED, operation_id="op-1", reason="")
            await u.payments.save(loaded)
            await u.commit()
        async with uow() as u:
            steps = await u.payments.steps(payment.payment_id)
            reloaded = await u.payments.get(payment.payment_id)
        assert [(s.step, s.event_type) for s in steps] == [
            (1, "status.initiated"),
            (2, "charge.requested"),
            (3, "charge.accepted"),
            (4, "status.pending"),
        ]
        assert steps[2].data == {"operation_id": "op-1"}
        assert reloaded is not None
        assert reloaded.steps == 4

    async def test_an_event_is_marked_processed_once(self, uow: UowFactory) -> None:
        event_id = str(uuid.uuid4())
        async with uow() as u:
            assert await u.payments.mark_processed("c", event_id)
            await u.commit()
        async with uow() as u:
            assert not await u.payments.mark_processed("c", event_id)
            assert await u.payments.mark_processed("other-consumer", event_id)

    async def test_saga_state_and_parent_survive_a_round_trip(self, uow: UowFactory) -> None:
        parent = deposit()
        parent.mark_pending("op-1")
        parent.complete()
        await added(uow, parent)
        async with uow() as u:
            loaded = await u.payments.get(parent.payment_id, for_update=True)
            assert loaded is not None
            refund = loaded.refund(RefundRequest(f"k-{uuid.uuid4()}", parent.payment_id, None))
            await u.payments.save(loaded)
            await u.payments.add(refund)
            await u.commit()
        async with uow() as u:
            stored_parent = await u.payments.get(parent.payment_id)
            stored_refund = await u.payments.get(refund.payment_id)
        assert stored_parent is not None
        assert stored_refund is not None
        assert stored_parent.saga.refund_reserved_minor == 1500
        assert stored_refund.parent_payment_id == parent.payment_id
        assert stored_refund.saga.charge_operation_id == "op-1"

    async def test_a_claim_is_answered_once(self, uow: UowFactory) -> None:
        claim = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", str(uuid.uuid4()))
        async with uow() as u:
            await u.payments.claim_key(claim)
            await u.commit()
        async with uow() as u:
            stored = await u.payments.claimed("alice", claim.key)
            assert stored is not None
            assert not stored.answered
            await u.payments.answer_claim(claim.payment_id, version=2)
            await u.payments.answer_claim(claim.payment_id, version=3, error_reason="LATE")
            await u.commit()
        async with uow() as u:
            stored = await u.payments.claimed("alice", claim.key)
        assert stored is not None
        assert (stored.response_version, stored.error_reason) == (2, "")

    async def test_many_claims_are_answered_at_once_each_once(self, uow: UowFactory) -> None:
        claims = [
            IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", str(uuid.uuid4()))
            for _ in range(3)
        ]
        async with uow() as u:
            for claim in claims:
                await u.payments.claim_key(claim)
            await u.payments.answer_claim(claims[2].payment_id, version=1)  # answered before
            await u.commit()
        async with uow() as u:
            await u.payments.answer_claims(
                [
                    ClaimAnswer(claims[0].payment_id, 2),
                    ClaimAnswer(claims[1].payment_id, 3, "INSUFFICIENT_FUNDS", "no money"),
                    ClaimAnswer(claims[2].payment_id, 4, "LATE", "too late"),
                ]
            )
            await u.commit()
        async with uow() as u:
            stored = [await u.payments.claimed("alice", c.key) for c in claims]
        assert [(s.response_version, s.error_reason, s.error_message) for s in stored if s] == [
            (2, "", ""),
            (3, "INSUFFICIENT_FUNDS", "no money"),
            (1, "", ""),  # an answered key keeps its answer
        ]

    async def test_only_sagas_unchanged_past_the_threshold_are_stalled(
        self, uow: UowFactory
    ) -> None:
        from datetime import timedelta

        waiting = await added(uow, deposit())
        done = deposit()
        done.mark_pending("op")
        done.complete()
        await added(uow, done)
        async with uow() as u:
            assert waiting.payment_id not in await u.payments.stalled(
                older_than=timedelta(hours=1), limit=1000
            )
            stalled = await u.payments.stalled(older_than=timedelta(0), limit=100_000)
        assert waiting.payment_id in stalled
        assert done.payment_id not in stalled

    async def test_a_saga_resumed_lately_waits_and_keeps_its_updated_at(
        self, uow: UowFactory
    ) -> None:
        waiting = await added(uow, deposit())
        async with uow() as u:
            loaded = await u.payments.get(waiting.payment_id, for_update=True)
            assert loaded is not None
            loaded.note_resumed(datetime.now(UTC) + timedelta(hours=1))
            await u.payments.save(loaded)
            await u.commit()
        async with uow() as u:
            stalled = await u.payments.stalled(older_than=timedelta(0), limit=100_000)
            stored = await u.payments.get(waiting.payment_id)
        assert waiting.payment_id not in stalled
        assert stored is not None
        assert stored.updated_at == waiting.updated_at
        assert stored.saga.resumed_at

    async def test_listing_by_account_is_newest_first_and_pages(self, uow: UowFactory) -> None:
        account = str(uuid.uuid4())
        payments = [await added(uow, deposit(account=account)) for _ in range(3)]
        await added(uow, deposit())  # another account's
        async with uow() as u:
            first = await u.payments.list(
                account_id=account, limit=2, before_seq=None, where=PaymentFilter()
            )
            rest = await u.payments.list(
                account_id=account, limit=2, before_seq=first[-1][0], where=PaymentFilter()
            )
        listed = [p.payment_id for _, p in first + rest]
        assert listed == [p.payment_id for p in reversed(payments)]

    async def test_listing_filters_by_status_kind_and_creation_time(self, uow: UowFactory) -> None:
        account = str(uuid.uuid4())
        older = await added(uow, deposit(account=account))
        newer = await added(uow, deposit(account=account))
        async with uow() as u:
            loaded = await u.payments.get(newer.payment_id, for_update=True)
            assert loaded is not None
            loaded.fail("declined")
            await u.payments.save(loaded)
            await u.commit()

        async def ids(where: PaymentFilter) -> list[str]:
            async with uow() as u:
                rows = await u.payments.list(
                    account_id=account, limit=10, before_seq=None, where=where
                )
            return [p.payment_id for _, p in rows]

        assert await ids(PaymentFilter(status=PaymentStatus.FAILED)) == [newer.payment_id]
        assert await ids(PaymentFilter(kind=PaymentKind.WITHDRAWAL)) == []
        assert older.created_at is not None
        assert await ids(PaymentFilter(created_before=older.created_at)) == []
        assert older.payment_id in await ids(PaymentFilter(created_after=older.created_at))

    # -- review cases ---------------------------------------------------------------------

    async def test_a_payment_entering_review_opens_one_case_and_more_reasons_add_to_it(
        self, uow: UowFactory
    ) -> None:
        payment = await added(uow, in_review())
        async with uow() as u:
            loaded = await u.payments.get(payment.payment_id, for_update=True)
            assert loaded is not None
            loaded.apply_compensation_outcome(succeeded=True, operation_id="r9", reason="")
            await u.payments.save(loaded)
            await u.commit()
        async with uow() as u:
            case = await u.payments.open_case(payment.payment_id)
            assert case is not None
            by_id = await u.payments.get_case(case.case_id)
        assert by_id == case
        assert (case.reason_code, case.status) == (
            ReviewReason.COMPENSATION_FAILED,
            ReviewStatus.OPEN,
        )
        assert [e.reason_code for e in case.evidence] == [
            ReviewReason.COMPENSATION_FAILED,
            ReviewReason.PROVIDER_CONTRADICTION,
        ]
        assert case.evidence[1].source == "refund.succeeded"

    async def test_a_reconciliation_mismatch_keeps_its_details_and_is_found_by_its_key(
        self, uow: UowFactory
    ) -> None:
        payment = await added(uow, in_review())
        details = {"wallet.credit": "missing", "payment.amount": "USD 10.00"}
        async with uow() as u:
            loaded = await u.payments.get(payment.payment_id, for_update=True)
            assert loaded is not None
            loaded.request_reconciliation_review("no credit", details, key="k1")
            await u.payments.save(loaded)
            await u.commit()
        async with uow() as u:
            case = await u.payments.case_with_key(payment.payment_id, "k1")
            assert await u.payments.case_with_key(payment.payment_id, "k2") is None
        assert case is not None
        mismatch = case.evidence[-1]
        assert (mismatch.reason_code, mismatch.key) == (ReviewReason.RECONCILIATION_MISMATCH, "k1")
        assert dict(mismatch.details) == details

    async def test_an_uncommitted_case_is_not_kept(self, uow: UowFactory) -> None:
        payment = in_review()
        async with uow() as u:
            await u.payments.add(payment)
        async with uow() as u:
            assert await u.payments.open_case(payment.payment_id) is None

    async def test_a_case_is_resolved_once_and_a_later_reason_opens_a_new_one(
        self, uow: UowFactory
    ) -> None:
        payment = await added(uow, in_review())
        async with uow() as u:
            case = await u.payments.open_case(payment.payment_id)
            assert case is not None
            stale = await u.payments.get_case(case.case_id)
            assert stale is not None
            case.resolve(decided())
            await u.payments.save_case(case)
            await u.commit()
        stale.resolve(decided(Resolution.FAILED))  # read while open, saved after
        async with uow() as u:
            with pytest.raises(ReviewAlreadyResolved):
                await u.payments.save_case(stale)
        async with uow() as u:
            stored = await u.payments.get_case(case.case_id)
            assert await u.payments.open_case(payment.payment_id) is None
            loaded = await u.payments.get(payment.payment_id, for_update=True)
            assert loaded is not None
            loaded.apply_compensation_outcome(succeeded=True, operation_id="r9", reason="")
            await u.payments.save(loaded)
            await u.commit()
        assert stored is not None
        assert stored.status is ReviewStatus.RESOLVED
        assert stored.decision is not None
        assert (stored.decision.resolution, stored.decision.resolved_by) == (
            Resolution.REFUNDED,
            "alice",
        )
        async with uow() as u:
            again = await u.payments.open_case(payment.payment_id)
        assert again is not None
        assert again.case_id != case.case_id
        assert again.reason_code is ReviewReason.PROVIDER_CONTRADICTION

    async def test_cases_are_listed_oldest_first_by_status_after_the_cursor(
        self, uow: UowFactory
    ) -> None:
        payments = [await added(uow, in_review()) for _ in range(3)]
        ids = {p.payment_id for p in payments}

        async def listed(status: ReviewStatus, after: int | None) -> list[tuple[int, str]]:
            async with uow() as u:
                rows = await u.payments.list_cases(status=status, limit=1000, after_seq=after)
            return [(seq, c.payment_id) for seq, c in rows if c.payment_id in ids]

        rows = await listed(ReviewStatus.OPEN, None)
        assert [pid for _, pid in rows] == [p.payment_id for p in payments]
        assert [pid for _, pid in await listed(ReviewStatus.OPEN, rows[0][0])] == [
            p.payment_id for p in payments[1:]
        ]
        assert await listed(ReviewStatus.RESOLVED, None) == []

    async def test_overdue_cases_are_alarmed_once_per_period(self, uow: UowFactory) -> None:
        payment = await added(uow, in_review())
        later = datetime.now(UTC) + timedelta(hours=5)

        async def alarm(now: datetime) -> list[str]:
            async with uow() as u:
                cases = await u.payments.alarm_overdue(
                    opened_before=now - timedelta(hours=4),
                    alarmed_before=now - timedelta(hours=1),
                    now=now,
                    limit=100_000,
                )
                await u.commit()
            return [c.payment_id for c in cases]

        assert payment.payment_id not in await alarm(datetime.now(UTC))
        assert payment.payment_id in await alarm(later)
        assert payment.payment_id not in await alarm(later + timedelta(minutes=30))
        assert payment.payment_id in await alarm(later + timedelta(minutes=61))


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def uow(self) -> UowFactory:
        store, published = FakeStore(), []

        def factory() -> UnitOfWork:
            return FakeUnitOfWork(store, published)

        return factory


@pytest.fixture(scope="module")
def store_settings(base_settings: Settings) -> Iterator[Settings]:
    """A payments database of the contract's own: on the suite's shared one, the running
    payment service's saga consumer acts on the payments these cases write (it records a
    charge's recovery point), racing the cases' own saves."""
    from common import db
    from payment_service.bootstrap import DATABASE

    settings = base_settings.model_copy(update={"database_prefix": f"s{uuid.uuid4().hex[:8]}_"})
    DATABASE.migrate(settings)
    yield settings
    db.drop_database(DATABASE.url(settings))


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
class TestSqlStore(StoreContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def uow(self, store_settings: Settings) -> AsyncIterator[UowFactory]:
        from common import db
        from payment_service.adapters.uow import PaymentUnitOfWork
        from payment_service.bootstrap import DATABASE

        engine = db.create_engine(DATABASE.url(store_settings), pool_size=2)

        def factory() -> UnitOfWork:
            return PaymentUnitOfWork(engine)

        yield factory
        await engine.dispose()


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_claims_past_the_retention_are_purged_and_the_key_is_free_again(
    migrated: Settings,
) -> None:
    from datetime import timedelta

    from sqlalchemy import text

    from common import db
    from payment_service.adapters.uow import PaymentUnitOfWork
    from payment_service.bootstrap import DATABASE

    engine = db.create_engine(DATABASE.url(migrated), pool_size=1)
    old = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", str(uuid.uuid4()))
    fresh = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", str(uuid.uuid4()))
    try:
        async with PaymentUnitOfWork(engine) as u:
            await u.payments.claim_key(old)
            await u.payments.claim_key(fresh)
            await u.conn.execute(
                text("UPDATE idempotency_keys SET created_at = now() - interval '73 hours'"
                     " WHERE key = :k"),
                {"k": old.key},
            )  # fmt: skip
            await u.commit()
        async with PaymentUnitOfWork(engine) as u:
            assert await u.payments.purge_claims(older_than=timedelta(hours=72), limit=100) >= 1
            await u.commit()
        async with PaymentUnitOfWork(engine) as u:
            assert await u.payments.claim_key(old) is None  # forgotten: free again
            assert await u.payments.claim_key(fresh) == fresh  # still remembered
    finally:
        await engine.dispose()


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_a_read_only_engine_reads_outside_a_transaction_and_refuses_a_write(
    migrated: Settings,
) -> None:
    """`peek`'s engine: a read is a statement on its own (no BEGIN and COMMIT around it), and
    a write through it fails on the server instead of committing on its own."""
    from psycopg.pq import TransactionStatus

    from common import db
    from common.errors import DependencyUnavailable
    from payment_service.adapters.uow import PaymentUnitOfWork
    from payment_service.bootstrap import DATABASE

    engine = db.create_engine(DATABASE.url(migrated), pool_size=1)
    reader = db.create_engine(DATABASE.url(migrated), pool_size=1, read_only=True)
    try:
        payment = await added(lambda: PaymentUnitOfWork(engine), deposit())
        async with PaymentUnitOfWork(reader) as u:
            found = await u.payments.get_many([payment.payment_id])
            assert u.raw.info.transaction_status is TransactionStatus.IDLE
            await u.commit()
        assert found[payment.payment_id].version == 1
        async with PaymentUnitOfWork(reader) as u:
            seen = await u.payments.get(payment.payment_id)
            assert seen is not None
            seen.mark_pending("op-1")
            with pytest.raises(Exception, match="read-only transaction") as refused:
                await u.payments.save(seen)
        assert not isinstance(refused.value, DependencyUnavailable)
        async with PaymentUnitOfWork(engine) as u:
            again = await u.payments.get(payment.payment_id)
            await u.commit()
        assert again is not None
        assert again.status is PaymentStatus.INITIATED
    finally:
        await reader.dispose()
        await engine.dispose()


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_creates_in_one_statement_write_the_outbox_rows_of_the_payments_added_only(
    migrated: Settings,
) -> None:
    """`PaymentUnitOfWork.create`: one autocommit statement writes the free keys' payments
    and their events' outbox rows, none for a payment whose key was taken; the connection
    goes back to the pool out of autocommit, so the next unit's writes still wait for its
    commit."""
    from sqlalchemy import text

    from common import db
    from payment_service.adapters.uow import PaymentUnitOfWork
    from payment_service.bootstrap import DATABASE

    engine = db.create_engine(DATABASE.url(migrated), pool_size=1)
    try:
        taken = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f0", str(uuid.uuid4()), 1)
        async with PaymentUnitOfWork(engine) as u:
            await u.payments.claim_key(taken)
            await u.commit()
        payments = [deposit(), deposit()]
        claims = [
            IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f1", payments[0].payment_id),
            IdempotencyClaim("alice", taken.key, "f2", payments[1].payment_id),
        ]
        async with PaymentUnitOfWork(engine) as u:
            priors = await u.create(claims, payments)
        assert priors[0] is None
        assert priors[1] is not None
        assert priors[1].payment_id == taken.payment_id

        async def outboxed(payment_id: str) -> list[str]:
            async with PaymentUnitOfWork(engine) as u:
                rows = await u.conn.execute(
                    text("SELECT event_type FROM outbox WHERE aggregate_id = :id ORDER BY id"),
                    {"id": payment_id},
                )
                await u.commit()
            return [row[0] for row in rows]

        assert await outboxed(payments[0].payment_id) == ["payment.initiated"]
        assert await outboxed(payments[1].payment_id) == []

        # The pool's one connection again, in a unit that leaves without committing.
        left = IdempotencyClaim("alice", f"k-{uuid.uuid4()}", "f3", str(uuid.uuid4()))
        async with PaymentUnitOfWork(engine) as u:
            assert not u.raw.autocommit
            assert await u.payments.claim_key(left) is None
        async with PaymentUnitOfWork(engine) as u:
            assert await u.payments.claimed("alice", left.key) is None
            await u.commit()
    finally:
        await engine.dispose()
