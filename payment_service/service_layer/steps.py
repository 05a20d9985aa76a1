"""One step of a payment's saga, written once: lock the payment, let it decide, save, commit,
and run it all again when it lost a race (`retry_on_conflict`).

Every call to another service happens between two steps, never inside one; what the call
answered is a step's input. A decision that changes nothing says so (`Unchanged`): the
transaction then ends without a write or a commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

from common.errors import NotFound, retry_on_conflict
from payment_service.domain.model import Payment
from payment_service.service_layer.ports import PaymentStore, UnitOfWork

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Unchanged(Generic[T]):
    """A decision to leave the payment as it is: nothing is saved or committed (the unit of
    work rolls back), and the step answers `value`."""

    value: T


async def save_settling_refunds(store: PaymentStore, payment: Payment) -> None:
    """Saves the payment; a refund that has just ended settles on its deposit in the same
    transaction (moving it to partially_refunded or refunded, or freeing its reservation).
    The refund is locked before its deposit, here as everywhere."""
    if payment.settles_refund():
        deposit = await store.get(payment.parent_payment_id, for_update=True)
        if deposit is not None:
            deposit.settle_refund(payment)
            await store.save(deposit)
    await store.save(payment)


def _not_found(payment_id: str) -> Callable[[], NoReturn]:
    def missing() -> NoReturn:
        raise NotFound("payment", payment_id)

    return missing


async def _read_nothing(store: PaymentStore, payment: Payment) -> None:
    return None


async def step(
    uow: Callable[[], UnitOfWork],
    payment_id: str,
    decide: Callable[[Payment], T | Unchanged[T]],
    *,
    missing: Callable[[], T] | None = None,
    then: Callable[[PaymentStore, T], Awaitable[None]] | None = None,
    retry: bool = True,
) -> T:
    """Locks the payment, lets `decide` change it, saves it (settling a refund that ended on
    its deposit), runs `then` with what was decided (a write of the same transaction), and
    commits; all of it again on a lost race, unless `retry` is off (a caller that retries a
    larger whole). A payment that does not exist is `missing()` (by default NOT_FOUND)."""
    return await step_with(
        uow,
        payment_id,
        _read_nothing,
        lambda payment, _: decide(payment),
        missing=missing,
        then=then,
        retry=retry,
    )


async def step_with(
    uow: Callable[[], UnitOfWork],
    payment_id: str,
    read: Callable[[PaymentStore, Payment], Awaitable[R]],
    decide: Callable[[Payment, R], T | Unchanged[T]],
    *,
    missing: Callable[[], T] | None = None,
    then: Callable[[PaymentStore, T], Awaitable[None]] | None = None,
    retry: bool = True,
) -> T:
    """`step`, for a decision that needs more than the payment: `read` runs under the
    payment's lock (an event already processed, an earlier attempt, a review case) and its
    answer goes to `decide` with the payment."""
    absent = missing or _not_found(payment_id)

    async def attempt() -> T:
        async with uow() as unit:
            store = unit.payments
            payment = await store.get(payment_id, for_update=True)
            if payment is None:
                return absent()
            decided = decide(payment, await read(store, payment))
            if isinstance(decided, Unchanged):
                return decided.value
            await save_settling_refunds(store, payment)
            if then is not None:
                await then(store, decided)
            await unit.commit()
            return decided

    return await retry_on_conflict(attempt) if retry else await attempt()
