"""Withdrawals, transfers, refunds, cancels and compensation, on fakes: every step's outcome,
the audit trail it leaves and the balances it leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    IdempotencyConflict,
    InsufficientFunds,
)
from common.money import Money
from payment_service.domain.errors import (
    PaymentNotCancellable,
    PaymentNotRefundable,
    RefundExceedsCaptured,
    Refused,
    RequestInFlight,
)
from payment_service.domain.requests import IdempotencyClaim
from payment_service.domain.saga import HoldState, ProviderAnswer
from payment_service.domain.status import PaymentStatus
from tests.payment_service.fakes import FakeUnitOfWork
from tests.payment_service.world import ACCOUNT, Process, World

T = TypeVar("T")

S = PaymentStatus
OTHER = "7f0c5b1a-2d3e-4f50-8a6b-9c0d1e2f3a4b"


def funded(amount: int = 10_000) -> World:
    world = World()
    world.wallet.available[ACCOUNT] = amount
    world.wallet.accounts[OTHER] = "USD"
    return world


async def withdraw(world: World, key: str = "w1", amount: int = 1000, dest: str = "acct_ok") -> str:
    payment = await world.requests.create_withdrawal(
        idempotency_key=key, account_id=ACCOUNT, amount=Money(amount, "USD"), destination=dest
    )
    return payment.payment_id


async def steps(world: World, payment_id: str) -> list[str]:
    return [s.event_type for s in await world.queries.audit_trail(payment_id)]


async def test_a_withdrawal_holds_on_the_request_path_then_pays_out_and_captures() -> None:
    world = funded()
    payment_id = await withdraw(world)
    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.saga.hold) == (S.INITIATED, HoldState.PLACED)
    assert world.wallet.available[ACCOUNT] == 9000
    assert world.gateway.calls == []  # the payout runs from payment.funds_held
    assert [getattr(e, "step", None) for e in world.published][-1] == "funds_held"

    await world.saga.ask_provider(payment_id)
    assert world.gateway.calls == [f"{payment_id}:payout"]
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING
    await world.handlers.provider_succeeded(
        event_id="e1", payment_id=payment_id, operation="payout", operation_id="op", provider="p"
    )
    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.saga.hold) == (S.COMPLETED, HoldState.CAPTURED)
    assert world.wallet.holds[payment.saga.hold_id][2] == "captured"
    assert world.wallet.available[ACCOUNT] == 9000
    assert await steps(world, payment_id) == [
        "status.initiated",
        "hold.placed",
        "payout.requested",
        "payout.accepted",
        "status.pending",
        "provider.payout_succeeded",
        "hold.captured",
        "status.completed",
    ]


async def test_insufficient_funds_is_refused_at_once_without_a_provider_call() -> None:
    world = funded(500)
    with pytest.raises(InsufficientFunds):
        await withdraw(world, amount=1000)
    assert world.gateway.calls == []
    (payment,) = world.store.rows.values()
    assert (payment.status, payment.failure_reason) == (S.FAILED, "insufficient_funds")
    # The key's stored response is the same refusal.
    with pytest.raises(Refused) as replay:
        await withdraw(world, amount=1000)
    assert replay.value.reason == "INSUFFICIENT_FUNDS"
    assert len(world.store.rows) == 1


async def test_a_failed_payout_releases_the_hold_before_failing() -> None:
    world = funded()
    payment_id = await withdraw(world)
    await world.saga.ask_provider(payment_id)
    await world.handlers.provider_failed(
        event_id="e1", payment_id=payment_id, operation="payout", operation_id="op", reason="closed"
    )
    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.saga.hold) == (S.FAILED, HoldState.RELEASED)
    assert world.wallet.available[ACCOUNT] == 10_000
    assert (await steps(world, payment_id))[-3:] == [
        "provider.payout_failed",
        "hold.released",
        "status.failed",
    ]


async def test_a_payout_declined_outright_releases_the_hold() -> None:
    world = funded()
    world.gateway.answer = ProviderAnswer.DECLINED
    payment_id = await withdraw(world)
    await world.saga.ask_provider(payment_id)
    assert (await world.queries.get_payment(payment_id)).status is S.FAILED
    assert world.wallet.available[ACCOUNT] == 10_000


async def test_an_unknown_payout_outcome_is_asked_again_never_failed() -> None:
    world = funded()
    world.gateway.answer = ProviderAnswer.UNKNOWN
    payment_id = await withdraw(world)
    with pytest.raises(DependencyUnavailable):
        await world.saga.ask_provider(payment_id)
    assert (await world.queries.get_payment(payment_id)).status is S.INITIATED
    assert world.wallet.available[ACCOUNT] == 9000  # still held


async def test_a_success_after_the_withdrawal_failed_asks_for_review() -> None:
    world = funded()
    payment_id = await withdraw(world)
    await world.saga.ask_provider(payment_id)
    await world.handlers.provider_failed(
        event_id="e1", payment_id=payment_id, operation="payout", operation_id="op", reason="x"
    )
    await world.handlers.provider_succeeded(
        event_id="e2", payment_id=payment_id, operation="payout", operation_id="op", provider="p"
    )
    assert (await world.queries.get_payment(payment_id)).status is S.FAILED
    assert (await steps(world, payment_id))[-1] == "review.requested"


async def test_cancel_before_the_provider_releases_the_hold_and_after_is_refused() -> None:
    world = funded()
    payment_id = await withdraw(world)
    cancelled = await world.requests.cancel_payment(payment_id)
    assert cancelled.status is S.CANCELLED
    await world.saga.release_hold(payment_id)  # from payment.cancelled
    assert world.wallet.available[ACCOUNT] == 10_000
    await world.saga.ask_provider(payment_id)  # a late funds_held asks nothing
    assert world.gateway.calls == []

    other = await withdraw(world, key="w2")
    await world.saga.ask_provider(other)
    with pytest.raises(PaymentNotCancellable):
        await world.requests.cancel_payment(other)


async def test_a_deposit_is_created_with_its_charge_requested_and_is_never_cancellable() -> None:
    world = World()
    payment_id = await world.create()
    created = await world.queries.get_payment(payment_id)
    assert created.saga.provider_call == "charge"  # the create's commit is the recovery point
    with pytest.raises(PaymentNotCancellable, match="deposit"):
        await world.requests.cancel_payment(payment_id)


async def test_a_deposits_charge_is_asked_from_its_creation_without_a_step_before_it() -> None:
    world = World()
    payment_id = await world.create()
    created = world.store.rows[payment_id].version
    await world.charge(payment_id)
    # The answer is the only change: no recovery point between the create and the call.
    assert world.store.rows[payment_id].version == created + 1
    assert world.gateway.calls == [f"{payment_id}:charge"]
    trail = [s.event_type for s in await world.queries.audit_trail(payment_id)]
    assert trail == ["status.initiated", "charge.requested", "charge.accepted", "status.pending"]


async def test_a_transfer_completes_in_one_wallet_operation() -> None:
    world = funded()
    payment = await world.requests.create_transfer(
        idempotency_key="t1",
        source_account_id=ACCOUNT,
        destination_account_id=OTHER,
        amount=Money(2500, "USD"),
    )
    assert payment.status is S.COMPLETED
    assert (world.wallet.available[ACCOUNT], world.wallet.available[OTHER]) == (7500, 2500)
    again = await world.requests.create_transfer(
        idempotency_key="t1",
        source_account_id=ACCOUNT,
        destination_account_id=OTHER,
        amount=Money(2500, "USD"),
    )
    assert (again.payment_id, again.status) == (payment.payment_id, S.COMPLETED)
    assert world.wallet.available[ACCOUNT] == 7500
    with pytest.raises(IdempotencyConflict):
        await world.requests.create_transfer(
            idempotency_key="t1",
            source_account_id=ACCOUNT,
            destination_account_id=OTHER,
            amount=Money(2600, "USD"),
        )


async def test_a_refused_transfer_fails_and_replays_the_refusal() -> None:
    world = funded(100)
    for _ in range(2):
        with pytest.raises((InsufficientFunds, Refused)):
            await world.requests.create_transfer(
                idempotency_key="t1",
                source_account_id=ACCOUNT,
                destination_account_id=OTHER,
                amount=Money(2500, "USD"),
            )
    (payment,) = world.store.rows.values()
    assert payment.status is S.FAILED


async def completed_deposit(world: World, amount: int = 1000) -> str:
    payment_id = await world.deposit(amount=amount)
    await world.handlers.charge_succeeded(event_id="c1", payment_id=payment_id, operation_id="op")
    return payment_id


async def refund(world: World, deposit_id: str, key: str, amount: int | None) -> str:
    payment = await world.requests.refund_payment(
        idempotency_key=key,
        payment_id=deposit_id,
        amount=Money(amount, "USD") if amount else None,
    )
    return payment.payment_id


async def test_partial_refunds_then_the_rest_refund_the_deposit() -> None:
    world = World()
    deposit_id = await completed_deposit(world)
    first = await refund(world, deposit_id, "r1", 300)
    await world.saga.ask_provider(first)
    await world.handlers.provider_succeeded(
        event_id="r1s", payment_id=first, operation="refund", operation_id="op", provider="p"
    )
    deposit = await world.queries.get_payment(deposit_id)
    assert (deposit.status, deposit.saga.refunded_minor) == (S.PARTIALLY_REFUNDED, 300)
    assert world.wallet.available[ACCOUNT] == 700
    with pytest.raises(RefundExceedsCaptured):
        await refund(world, deposit_id, "r2", 701)
    rest = await refund(world, deposit_id, "r3", None)
    assert (await world.queries.get_payment(rest)).amount == Money(700, "USD")
    await world.saga.ask_provider(rest)
    await world.handlers.provider_succeeded(
        event_id="r3s", payment_id=rest, operation="refund", operation_id="op2", provider="p"
    )
    deposit = await world.queries.get_payment(deposit_id)
    assert (deposit.status, deposit.refundable_minor) == (S.REFUNDED, 0)
    assert world.wallet.available[ACCOUNT] == 0


async def test_a_failed_refund_frees_its_reservation() -> None:
    world = World()
    deposit_id = await completed_deposit(world)
    first = await refund(world, deposit_id, "r1", None)
    with pytest.raises(RefundExceedsCaptured):
        await refund(world, deposit_id, "r2", 1)
    await world.saga.ask_provider(first)
    await world.handlers.provider_failed(
        event_id="f", payment_id=first, operation="refund", operation_id="op", reason="no"
    )
    assert (await world.queries.get_payment(first)).status is S.FAILED
    deposit = await world.queries.get_payment(deposit_id)
    assert (deposit.status, deposit.refundable_minor) == (S.COMPLETED, 1000)
    assert world.wallet.available[ACCOUNT] == 1000


async def test_only_a_completed_deposit_is_refundable() -> None:
    world = funded()
    pending = await world.deposit()
    with pytest.raises(PaymentNotRefundable):
        await refund(world, pending, "r1", None)
    withdrawal = await withdraw(world)
    with pytest.raises(PaymentNotRefundable):
        await refund(world, withdrawal, "r2", None)


async def test_concurrent_refunds_never_exceed_the_captured_amount() -> None:
    world = World()
    deposit_id = await completed_deposit(world)
    results = await asyncio.gather(
        *(refund(world, deposit_id, f"r{i}", 300) for i in range(6)), return_exceptions=True
    )
    made = [r for r in results if isinstance(r, str)]
    assert len(made) == 3
    assert all(isinstance(r, RefundExceedsCaptured) for r in results if not isinstance(r, str))


async def test_compensation_refund_retries_then_asks_for_review() -> None:
    world = World()
    payment_id = await world.deposit()
    del world.wallet.accounts[ACCOUNT]  # the credit can never apply
    await world.handlers.charge_succeeded(event_id="c1", payment_id=payment_id, operation_id="op")
    assert (await world.queries.get_payment(payment_id)).status is S.REFUNDING
    world.gateway.answer = ProviderAnswer.DECLINED
    for _ in range(3):
        await world.saga.compensate(payment_id)
    payment = await world.queries.get_payment(payment_id)
    assert payment.status is S.REQUIRES_MANUAL_REVIEW
    assert world.gateway.calls[-3:] == [
        f"{payment_id}:refund",
        f"{payment_id}:refund:2",
        f"{payment_id}:refund:3",
    ]
    # The failure event of the last attempt, arriving after its answer, is not counted twice.
    await world.handlers.provider_failed(
        event_id="late",
        payment_id=payment_id,
        operation="refund",
        operation_id=f"op-{payment_id}:refund:3",
        reason="refund_declined",
    )
    assert (await steps(world, payment_id)).count("refund.failed") == 3


async def test_compensation_refund_succeeding_refunds_the_deposit() -> None:
    world = World()
    payment_id = await world.deposit()
    del world.wallet.accounts[ACCOUNT]
    await world.handlers.charge_succeeded(event_id="c1", payment_id=payment_id, operation_id="op")
    await world.saga.compensate(payment_id)
    await world.handlers.provider_succeeded(
        event_id="r", payment_id=payment_id, operation="refund", operation_id="r", provider="p"
    )
    assert (await world.queries.get_payment(payment_id)).status is S.REFUNDED


async def test_a_stalled_withdrawal_is_resumed_from_its_recovery_point() -> None:
    world = funded()
    world.wallet.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await withdraw(world)
    (payment,) = world.store.rows.values()
    world.wallet.unavailable = False
    assert await world.recovery.resume_stalled(older_than=timedelta(0)) == 1
    resumed = await world.queries.get_payment(payment.payment_id)
    assert resumed.saga.hold is HoldState.PLACED
    await world.recovery.resume_stalled(older_than=timedelta(0))
    assert world.gateway.calls == [f"{payment.payment_id}:payout"]
    assert "saga.resumed" in await steps(world, payment.payment_id)


async def test_a_repeat_while_the_first_is_in_flight_is_aborted_with_a_retry_hint() -> None:
    world = funded()
    service = world.process(in_flight_wait_s=0.1).requests
    claim = IdempotencyClaim("anonymous", "w1", "fp", "p-1")
    world.store.claims[("anonymous", "w1")] = claim
    with pytest.raises(IdempotencyConflict):
        await service._replay(claim, "other")
    with pytest.raises(RequestInFlight) as aborted:
        await service._replay(claim, "fp")
    assert aborted.value.retry_after_s > 0


async def test_a_gateway_down_at_the_payout_leaves_it_to_be_retried_with_the_same_key() -> None:
    world = funded()
    payment_id = await withdraw(world)
    world.gateway.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await world.saga.ask_provider(payment_id)
    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.saga.provider_call) == (S.INITIATED, "payout")
    world.gateway.unavailable = False
    await world.saga.ask_provider(payment_id)  # the redelivered funds_held
    assert world.gateway.calls == [f"{payment_id}:payout"]
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING


async def test_a_wallet_down_at_the_capture_waits_and_changes_nothing() -> None:
    world = funded()
    payment_id = await withdraw(world)
    await world.saga.ask_provider(payment_id)
    world.wallet.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await world.handlers.provider_succeeded(
            event_id="e1", payment_id=payment_id, operation="payout", operation_id="o", provider="p"
        )
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING
    world.wallet.unavailable = False
    await world.handlers.provider_succeeded(
        event_id="e1", payment_id=payment_id, operation="payout", operation_id="o", provider="p"
    )
    assert (await world.queries.get_payment(payment_id)).status is S.COMPLETED
    assert world.wallet.available[ACCOUNT] == 9000


async def test_a_hold_that_cannot_be_captured_after_a_payout_goes_to_review() -> None:
    world = funded()
    payment_id = await withdraw(world)
    await world.saga.ask_provider(payment_id)
    payment = await world.queries.get_payment(payment_id)
    account, amount, _ = world.wallet.holds[payment.saga.hold_id]
    world.wallet.holds[payment.saga.hold_id] = (account, amount, "expired")

    async def refuse(**_: object) -> None:
        raise FailedPrecondition("hold is not open")

    world.wallet.capture_hold = refuse  # type: ignore[method-assign]  # a refusing wallet, for this test
    await world.handlers.provider_succeeded(
        event_id="e1", payment_id=payment_id, operation="payout", operation_id="o", provider="p"
    )
    payment = await world.queries.get_payment(payment_id)
    assert payment.status is S.REQUIRES_MANUAL_REVIEW
    assert "capture failed" in (await world.queries.history(payment_id))[-1].reason


async def test_a_hold_placed_after_the_payment_was_cancelled_is_released() -> None:
    world = funded()
    world.wallet.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await withdraw(world)
    (payment,) = world.store.rows.values()
    await world.requests.cancel_payment(payment.payment_id)
    world.wallet.unavailable = False
    await world.saga.hold_funds(payment)  # the request path's hold, arriving late
    stored = await world.queries.get_payment(payment.payment_id)
    assert (stored.status, stored.saga.hold) == (S.CANCELLED, HoldState.RELEASED)
    assert world.wallet.available[ACCOUNT] == 10_000


async def test_a_hold_an_outage_interrupted_is_placed_once_the_wallet_is_back() -> None:
    world = funded()
    service = world.process()  # one process: what it deferred is its own
    world.wallet.unavailable = True
    for key in ("w1", "w2"):
        with pytest.raises(DependencyUnavailable):
            await service.requests.create_withdrawal(
                idempotency_key=key, account_id=ACCOUNT, amount=Money(1000, "USD"), destination="d"
            )
    assert await service.recovery.resume_deferred() == 2  # still down: both wait

    world.wallet.unavailable = False
    assert await service.recovery.resume_deferred() == 0
    for payment in world.store.rows.values():
        resumed = await service.queries.get_payment(payment.payment_id)
        assert resumed.saga.hold is HoldState.PLACED
    assert await service.recovery.resume_deferred() == 0  # nothing twice
    assert len(world.wallet.holds) == 2


async def test_the_saga_step_charges_once_and_records_pending() -> None:
    world = World()
    payment_id = await world.deposit()
    payment = await world.queries.get_payment(payment_id)
    assert payment.status is S.PENDING
    assert world.gateway.calls == [f"{payment_id}:charge"]
    # A redelivered payment.initiated asks again with the same key (the gateway answers
    # what it has), and the answer changes nothing: the payment moved on.
    version = world.store.rows[payment_id].version
    await world.charge(payment_id)
    assert world.gateway.calls == [f"{payment_id}:charge"] * 2
    assert world.store.rows[payment_id].version == version
    assert [c.to_status for c in await world.queries.history(payment_id)] == [
        S.INITIATED,
        S.PENDING,
    ]


async def test_an_unknown_provider_outcome_is_retried_not_failed() -> None:
    world = World()
    world.gateway.answer = ProviderAnswer.UNKNOWN
    payment_id = await world.create()
    with pytest.raises(DependencyUnavailable):
        await world.charge(payment_id)
    assert (await world.queries.get_payment(payment_id)).status is S.INITIATED


async def test_unreachable_gateway_leaves_it_initiated_and_a_retry_resumes() -> None:
    world = World()
    world.gateway.unavailable = True
    payment_id = await world.create()
    with pytest.raises(DependencyUnavailable):
        await world.charge(payment_id)
    assert (await world.queries.get_payment(payment_id)).status is S.INITIATED
    world.gateway.unavailable = False
    await world.charge(payment_id)  # the event, redelivered
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING


async def test_gateway_refusal_fails_the_payment() -> None:
    world = World()
    world.gateway.answer = ProviderAnswer.DECLINED
    payment = await world.queries.get_payment(await world.deposit())
    assert payment.status is S.FAILED
    assert payment.failure_reason == "card_declined"


async def what_runs_without_the_caller() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def held_back(
    call: Callable[..., Awaitable[T]], entered: asyncio.Event, release: asyncio.Event
) -> Callable[..., Awaitable[T]]:
    """`call`, which says when it is first entered and waits for `release` before it runs."""

    async def slow(*args: Any, **kwargs: Any) -> T:
        if not release.is_set():
            entered.set()
            await release.wait()
        return await call(*args, **kwargs)

    return slow


async def withdrawal_cancelled_midway(
    service: Process, entered: asyncio.Event, release: asyncio.Event
) -> None:
    """A CreateWithdrawal whose caller gives up once `entered` is set (gRPC cancels its
    task); then `release` lets the held-up step go on, and what runs without the caller runs."""
    request = asyncio.create_task(
        service.requests.create_withdrawal(
            idempotency_key="w1", account_id=ACCOUNT, amount=Money(1000, "USD"), destination="d"
        )
    )
    await entered.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    release.set()
    await what_runs_without_the_caller()


async def test_a_hold_whose_request_was_cancelled_midway_is_placed_all_the_same() -> None:
    """The caller gave up (its deadline passed, e.g. while this process was paused) while
    the wallet was placing the hold: gRPC cancels the request's task, and nothing else would
    move the payment on before the resume sweep's threshold."""
    world = funded()
    service = world.process()
    entered, release = asyncio.Event(), asyncio.Event()
    world.wallet.place_hold = held_back(world.wallet.place_hold, entered, release)  # type: ignore[method-assign]
    await withdrawal_cancelled_midway(service, entered, release)

    assert await service.recovery.resume_deferred() == 0
    (payment,) = world.store.rows.values()
    resumed = await service.queries.get_payment(payment.payment_id)
    assert resumed.saga.hold is HoldState.PLACED
    assert len(world.wallet.holds) == 1


async def test_a_withdrawal_whose_request_was_cancelled_as_it_committed_is_held() -> None:
    """The caller gave up while the create's transaction was in PostgreSQL: the group commit's
    worker commits it all the same, and the hold must follow without the caller."""
    world = funded()
    entered, release = asyncio.Event(), asyncio.Event()
    make_uow = world.uow

    def slow_uow() -> FakeUnitOfWork:
        unit = make_uow()
        unit.commit = held_back(unit.commit, entered, release)  # type: ignore[method-assign]
        return unit

    world.uow = slow_uow  # type: ignore[method-assign]
    service = world.process()
    await withdrawal_cancelled_midway(service, entered, release)

    assert await service.recovery.resume_deferred() == 0
    (payment,) = world.store.rows.values()
    held = await service.queries.get_payment(payment.payment_id)
    assert held.saga.hold is HoldState.PLACED
    assert len(world.wallet.holds) == 1
