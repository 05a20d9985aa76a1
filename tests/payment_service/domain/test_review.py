"""Review cases: resolved once, overdue past their SLA, claimed before money moves."""

from datetime import datetime, timedelta

import pytest

from payment_service.domain.errors import ReviewAlreadyResolved
from payment_service.domain.review import (
    Resolution,
    ReviewCase,
    ReviewReason,
    ReviewStatus,
)
from tests.payment_service.domain.builders import NOW, decision


def case(opened_at: datetime = NOW) -> ReviewCase:
    return ReviewCase("case-1", "p-1", ReviewReason.COMPENSATION_FAILED, "why", opened_at)


def test_a_case_is_resolved_once() -> None:
    review = case()
    review.resolve(decision())
    assert review.status is ReviewStatus.RESOLVED
    with pytest.raises(ReviewAlreadyResolved):
        review.resolve(decision(Resolution.FAILED))
    assert review.decision == decision()


def test_an_open_case_past_its_sla_is_overdue_and_a_resolved_one_never() -> None:
    review = case(NOW - timedelta(hours=5))
    assert review.overdue(NOW, timedelta(hours=4))
    assert not review.overdue(NOW, timedelta(hours=6))
    review.resolve(decision())
    assert not review.overdue(NOW, timedelta(hours=4))
    assert review.age(NOW + timedelta(days=1)) == timedelta(hours=5)


def test_a_claimed_case_refuses_another_resolution_and_takes_its_own() -> None:
    from datetime import UTC, datetime

    from payment_service.domain.errors import ReviewAlreadyResolved
    from payment_service.domain.review import Decision, Resolution, ReviewCase, ReviewReason

    now = datetime.now(UTC)
    case = ReviewCase("c-1", "p-1", ReviewReason.COMPENSATION_FAILED, "x", now)
    case.claim(Resolution.COMPLETED)
    case.claim(Resolution.COMPLETED)  # a retry of the same resolution
    with pytest.raises(ReviewAlreadyResolved):
        case.resolve(Decision(Resolution.FAILED, "n", "bob", now))
    case.release(Resolution.FAILED)  # not its claim: nothing
    assert case.claimed is Resolution.COMPLETED
    case.resolve(Decision(Resolution.COMPLETED, "n", "alice", now))
    assert case.claimed is None
