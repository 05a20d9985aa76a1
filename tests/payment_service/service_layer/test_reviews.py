"""The manual-review workbench on fakes: cases opened with the change that needs them, listed
oldest first, resolved once through the state machine, and the SLA alarm."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from common.errors import FailedPrecondition, NotFound, ValidationError
from payment_service.domain.errors import (
    ResolutionContradictsPayment,
    ReviewAlreadyResolved,
)
from payment_service.domain.events import PaymentStatusChanged
from payment_service.domain.review import Resolution, ReviewReason, ReviewStatus
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from payment_service.service_layer.reviews import ReviewService
from tests.payment_service.world import ACCOUNT, World

S = PaymentStatus


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def reviews(world: World, clock: Clock | None = None) -> ReviewService:
    return ReviewService(
        uow=world.uow, wallet=world.wallet, sla=timedelta(hours=4), clock=clock or Clock()
    )


async def in_review(world: World, key: str = "k1") -> str:
    """A deposit the wallet can never credit, whose compensation refund fails 3 times."""
    payment_id = await world.deposit(key)
    accounts = dict(world.wallet.accounts)
    world.wallet.accounts.pop(ACCOUNT, None)
    await world.handlers.charge_succeeded(
        event_id=f"c-{key}", payment_id=payment_id, operation_id="op"
    )
    world.gateway.answer = ProviderAnswer.DECLINED
    for _ in range(3):
        await world.saga.compensate(payment_id)
    world.gateway.answer = ProviderAnswer.ACCEPTED
    world.wallet.accounts.update(accounts)
    assert (await world.queries.get_payment(payment_id)).status is S.REQUIRES_MANUAL_REVIEW
    return payment_id


async def case_of(world: World, payment_id: str) -> str:
    async with world.uow() as uow:
        case = await uow.payments.open_case(payment_id)
    assert case is not None
    return case.case_id


def status_events(world: World, payment_id: str, to_status: str) -> int:
    return sum(
        1
        for e in world.published
        if isinstance(e, PaymentStatusChanged)
        and e.payment_id == payment_id
        and e.to_status == to_status
    )


async def test_a_payment_entering_review_opens_one_case_and_later_reasons_add_evidence() -> None:
    world = World()
    payment_id = await in_review(world)
    # The provider then reports a refund of it succeeded after all: more evidence, same case.
    await world.handlers.provider_succeeded(
        event_id="late", payment_id=payment_id, operation="refund", operation_id="r", provider="p"
    )
    page = await reviews(world).list_cases(page_size=0, page_token="")
    [view] = page.cases
    assert view.case.payment_id == payment_id
    assert view.case.reason_code is ReviewReason.COMPENSATION_FAILED
    assert [e.reason_code for e in view.case.evidence] == [
        ReviewReason.COMPENSATION_FAILED,
        ReviewReason.PROVIDER_CONTRADICTION,
    ]
    assert view.case.evidence[1].source == "refund.succeeded"
    assert not view.overdue


async def test_resolving_as_completed_credits_once_and_completes_the_deposit_once() -> None:
    world = World()
    payment_id = await in_review(world)
    case_id = await case_of(world, payment_id)
    service = reviews(world)
    view = await service.resolve(
        case_id=case_id, resolution=Resolution.COMPLETED, note="credited by hand", resolved_by="al"
    )
    assert view.case.status is ReviewStatus.RESOLVED
    assert view.case.decision is not None
    assert view.case.decision.resolved_by == "al"
    payment = await world.queries.get_payment(payment_id)
    assert payment.status is S.COMPLETED
    assert world.wallet.credits[f"{payment_id}:review-credit"][0] == ACCOUNT
    assert world.wallet.available[ACCOUNT] == payment.amount.amount_minor
    assert status_events(world, payment_id, "completed") == 1
    trail = [s.event_type for s in await world.queries.audit_trail(payment_id)]
    assert trail[-3:] == ["review.resolved", "credit.completed", "status.completed"]

    with pytest.raises(ReviewAlreadyResolved):
        await service.resolve(
            case_id=case_id, resolution=Resolution.FAILED, note="again", resolved_by="bo"
        )
    assert status_events(world, payment_id, "completed") == 1
    assert world.wallet.available[ACCOUNT] == payment.amount.amount_minor
    assert (await service.list_cases(page_size=10, page_token="")).cases == []


async def test_two_racing_resolves_resolve_once_and_credit_once() -> None:
    world = World()
    payment_id = await in_review(world)
    case_id = await case_of(world, payment_id)
    service = reviews(world)
    credit = world.wallet.credit
    looked = asyncio.Barrier(2)

    async def slow_credit(**kwargs: Any) -> None:
        await looked.wait()  # both resolves have seen the case open before either commits
        await credit(**kwargs)

    world.wallet.credit = slow_credit  # type: ignore[method-assign]  # a slow wallet, for this test
    results = await asyncio.gather(
        *(
            service.resolve(
                case_id=case_id, resolution=Resolution.COMPLETED, note="n", resolved_by=f"op{i}"
            )
            for i in range(2)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ReviewAlreadyResolved)]
    assert len(refused) == 1, results
    assert status_events(world, payment_id, "completed") == 1
    assert (await world.queries.get_payment(payment_id)).status is S.COMPLETED
    assert list(world.wallet.credits) == [f"{payment_id}:review-credit"]
    assert world.wallet.available[ACCOUNT] == 1000


@pytest.mark.parametrize("credit_first", [True, False])
async def test_racing_different_resolutions_never_leave_a_credit_beside_another_decision(
    credit_first: bool,
) -> None:
    world = World()
    payment_id = await in_review(world)
    case_id = await case_of(world, payment_id)
    service = reviews(world)
    credit = world.wallet.credit
    other_done = asyncio.Event()

    async def slow_credit(**kwargs: Any) -> None:
        if not credit_first:
            await other_done.wait()  # the failed resolution tries while the credit is out
        await credit(**kwargs)

    world.wallet.credit = slow_credit  # type: ignore[method-assign]  # a slow wallet, for this test

    async def fail_it() -> object:
        await asyncio.sleep(0)
        try:
            return await service.resolve(
                case_id=case_id, resolution=Resolution.FAILED, note="n", resolved_by="bo"
            )
        finally:
            other_done.set()

    complete_it = service.resolve(
        case_id=case_id, resolution=Resolution.COMPLETED, note="n", resolved_by="al"
    )
    results = await asyncio.gather(complete_it, fail_it(), return_exceptions=True)
    assert sum(isinstance(r, ReviewAlreadyResolved) for r in results) == 1, results
    status = (await world.queries.get_payment(payment_id)).status
    if status is S.COMPLETED:
        assert list(world.wallet.credits) == [f"{payment_id}:review-credit"]
    else:
        assert status is S.FAILED
        assert world.wallet.credits == {}


async def test_a_deposit_resolved_as_refunded_posts_nothing() -> None:
    world = World()
    payment_id = await in_review(world)
    await reviews(world).resolve(
        case_id=await case_of(world, payment_id),
        resolution=Resolution.REFUNDED,
        note="refunded at the provider by hand",
        resolved_by="al",
    )
    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.refundable_minor) == (S.REFUNDED, 0)
    assert status_events(world, payment_id, "refunded") == 1
    assert world.wallet.credits == {}


async def test_a_wallet_refusing_the_review_credit_resolves_nothing() -> None:
    world = World()
    payment_id = await in_review(world)
    case_id = await case_of(world, payment_id)
    del world.wallet.accounts[ACCOUNT]
    with pytest.raises(NotFound):
        await reviews(world).resolve(
            case_id=case_id, resolution=Resolution.COMPLETED, note="n", resolved_by="al"
        )
    assert (await world.queries.get_payment(payment_id)).status is S.REQUIRES_MANUAL_REVIEW
    assert len((await reviews(world).list_cases(page_size=10, page_token="")).cases) == 1


async def contradicted(world: World) -> tuple[str, str]:
    """A declined deposit the provider later reports charged: a contradiction case."""
    world.gateway.answer = ProviderAnswer.DECLINED
    payment_id = await world.deposit()
    world.gateway.answer = ProviderAnswer.ACCEPTED
    assert (await world.queries.get_payment(payment_id)).status is S.FAILED
    await world.handlers.charge_succeeded(event_id="late", payment_id=payment_id, operation_id="o")
    return payment_id, await case_of(world, payment_id)


async def test_a_contradiction_case_records_a_decision_but_never_moves_a_final_state() -> None:
    world = World()
    payment_id, case_id = await contradicted(world)
    service = reviews(world)
    with pytest.raises(ResolutionContradictsPayment) as refused:
        await service.resolve(
            case_id=case_id, resolution=Resolution.COMPLETED, note="n", resolved_by="al"
        )
    assert refused.value.reason == "REVIEW_RESOLUTION_CONTRADICTS_PAYMENT"
    assert isinstance(refused.value, FailedPrecondition)
    published = len(world.published)
    view = await service.resolve(
        case_id=case_id, resolution=Resolution.FAILED, note="provider voided it", resolved_by="al"
    )
    assert view.case.status is ReviewStatus.RESOLVED
    payment = await world.queries.get_payment(payment_id)
    assert payment.status is S.FAILED
    assert len(world.published) == published  # no status event: nothing moved
    assert world.wallet.credits == {}
    evidence = await service.get_case(case_id)
    assert evidence.steps[-1].event_type == "review.resolved"
    assert evidence.payment.payment_id == payment_id


async def test_a_case_is_shown_with_its_payment_and_audit_trail() -> None:
    world = World()
    payment_id = await in_review(world)
    evidence = await reviews(world).get_case(await case_of(world, payment_id))
    assert evidence.payment.gateway_operation_id
    assert "status.requires_manual_review" in [s.event_type for s in evidence.steps]
    with pytest.raises(NotFound):
        await reviews(world).get_case("0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a9")


async def test_listing_is_oldest_first_and_pages() -> None:
    world = World()
    payment_ids = [await in_review(world, key=f"k{i}") for i in range(3)]
    service = reviews(world)
    first = await service.list_cases(page_size=2, page_token="")
    rest = await service.list_cases(page_size=2, page_token=first.next_page_token)
    assert [v.case.payment_id for v in first.cases + rest.cases] == payment_ids
    assert rest.next_page_token == ""
    with pytest.raises(ValidationError):
        await service.list_cases(page_size=101, page_token="")
    with pytest.raises(ValidationError):
        await service.list_cases(page_size=1, page_token="x")


@pytest.mark.parametrize(
    ("resolution", "note", "by"),
    [(None, "n", "al"), (Resolution.FAILED, "", "al"), (Resolution.FAILED, "n", "")],
)
async def test_a_resolution_needs_a_decision_a_note_and_a_name(
    resolution: Resolution | None, note: str, by: str
) -> None:
    world = World()
    case_id = await case_of(world, await in_review(world))
    with pytest.raises(ValidationError):
        await reviews(world).resolve(
            case_id=case_id, resolution=resolution, note=note, resolved_by=by
        )


async def test_an_overdue_case_is_flagged_and_alarmed_at_most_once_an_hour() -> None:
    world = World()
    clock = Clock()
    service = reviews(world, clock)
    await in_review(world)
    assert await service.alarm_overdue() == []
    clock.now += timedelta(hours=4, minutes=1)
    [listed] = (await service.list_cases(page_size=10, page_token="")).cases
    assert listed.overdue
    with capture_logs() as logs:
        [alarmed] = await service.alarm_overdue()
        assert await service.alarm_overdue() == []
    assert alarmed.overdue
    assert [(e["event"], e["log_level"]) for e in logs] == [("review.case_overdue", "warning")]
    clock.now += timedelta(minutes=61)
    assert len(await service.alarm_overdue()) == 1


# -- cases opened from outside (the recovery worker's reconciliation) ------------------------

MISMATCH = {"payment.amount": "1000 USD", "wallet.credit": "(none)"}


async def test_a_reconciliation_mismatch_opens_a_case_once_leaving_the_payment_as_it_is() -> None:
    world = World()
    payment_id = await world.deposit("k1")
    service = reviews(world)
    before = (await world.queries.get_payment(payment_id)).status
    first = await service.open_case(
        payment_id=payment_id,
        reason_code="RECONCILIATION_MISMATCH",
        reason="no credit",
        evidence=MISMATCH,
    )
    again = await service.open_case(
        payment_id=payment_id,
        reason_code="RECONCILIATION_MISMATCH",
        reason="no credit",
        evidence=dict(MISMATCH),
    )
    assert again.case.case_id == first.case.case_id
    assert first.case.reason_code is ReviewReason.RECONCILIATION_MISMATCH
    [evidence] = again.case.evidence
    assert (evidence.source, dict(evidence.details)) == ("reconciliation", MISMATCH)
    assert (await world.queries.get_payment(payment_id)).status is before
    other = await service.open_case(
        payment_id=payment_id,
        reason_code="RECONCILIATION_MISMATCH",
        reason="provider disagrees",
        evidence={"gateway.operation": "(none)"},
    )
    assert other.case.case_id == first.case.case_id
    assert len(other.case.evidence) == 2


async def test_a_mismatch_already_resolved_is_not_opened_again() -> None:
    world = World()
    payment_id = await world.deposit("k1")
    service = reviews(world)
    args: dict[str, Any] = {
        "payment_id": payment_id,
        "reason_code": "RECONCILIATION_MISMATCH",
        "reason": "no credit",
        "evidence": MISMATCH,
    }
    first = await service.open_case(**args)
    async with world.uow() as uow:
        case = await uow.payments.get_case(first.case.case_id, for_update=True)
        assert case is not None
        case.status = ReviewStatus.RESOLVED
        world.store.cases[case.case_id] = case
    assert (await service.open_case(**args)).case.status is ReviewStatus.RESOLVED


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reason_code": "COMPENSATION_FAILED"}, "reason_code"),
        ({"reason": ""}, "reason"),
        ({"payment_id": "nope"}, "payment_id"),
        ({"evidence": {"": "x"}}, "evidence[]"),
    ],
)
async def test_an_outside_case_needs_an_openable_reason_and_bounded_evidence(
    changes: dict[str, Any], field: str
) -> None:
    world = World()
    payment_id = await world.deposit("k1")
    args: dict[str, Any] = {
        "payment_id": payment_id,
        "reason_code": "RECONCILIATION_MISMATCH",
        "reason": "no credit",
        "evidence": MISMATCH,
    } | changes
    with pytest.raises(ValidationError) as raised:
        await reviews(world).open_case(**args)
    assert raised.value.violations[0].field == field


async def test_an_outside_case_on_an_unknown_payment_is_not_found() -> None:
    with pytest.raises(NotFound):
        await reviews(World()).open_case(
            payment_id="00000000-0000-4000-8000-000000000000",
            reason_code="RECONCILIATION_MISMATCH",
            reason="orphan",
            evidence={},
        )
