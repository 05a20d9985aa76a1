"""The manual-review workbench: list, show and resolve review cases, and their SLA alarm.

Cases are opened by the payments themselves (`Payment.new_reviews`, written by the repository
in the transaction of the change that needs a look); this module only reads and resolves
them. A resolution goes through the payment's state machine (`Payment.resolve_review`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from common.errors import (
    ConcurrentUpdate,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    ValidationError,
    require,
    retry_on_conflict,
)
from common.ids import parse_id
from payment_service.domain.errors import ReviewAlreadyResolved
from payment_service.domain.model import Payment
from payment_service.domain.review import (
    Decision,
    Resolution,
    ReviewCase,
    ReviewReason,
    ReviewStatus,
    mismatch_key,
)
from payment_service.domain.trail import PaymentStep
from payment_service.service_layer.ports import PaymentStore, UnitOfWork, WalletPort
from payment_service.service_layer.queries import page_params
from payment_service.service_layer.steps import Unchanged, step_with

log = structlog.get_logger(__name__)

DEFAULT_SLA = timedelta(hours=4)
# An overdue case is logged again at most this often.
ALARM_EVERY = timedelta(hours=1)
MAX_NOTE = 2000
# What another service may open a case for (OpenReviewCase); the other reasons are the
# payment's own, decided by its state machine.
OPENABLE = frozenset({ReviewReason.RECONCILIATION_MISMATCH})
MAX_EVIDENCE_ITEMS = 50
MAX_EVIDENCE_VALUE = 2000

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def review_credit_ref(payment_id: str) -> str:
    """The wallet operation ref of the credit a review posts: one effect however often a
    resolve is retried or raced."""
    return f"{payment_id}:review-credit"


@dataclass(frozen=True, slots=True)
class CaseView:
    """A case as of `now`: how long it has been open (or was, once resolved), and whether it
    is past its SLA."""

    case: ReviewCase
    age: timedelta
    overdue: bool


@dataclass(frozen=True, slots=True)
class CasePage:
    cases: list[CaseView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class CaseEvidence:
    """What an operator decides on: the case, the payment (with its gateway operation id) and
    its audit trail. The provider's live status and the wallet's entries are not fetched here:
    `paysuite` shows the gateway operation id to look them up."""

    view: CaseView
    payment: Payment
    steps: list[PaymentStep]


def _openable(reason_code: str) -> ReviewReason:
    code = next((c for c in OPENABLE if c.value == reason_code), None)
    if code is None:
        allowed = ", ".join(sorted(OPENABLE))
        raise ValidationError(FieldViolation("reason_code", f"must be one of: {allowed}"))
    return code


def _evidence(evidence: Mapping[str, str]) -> dict[str, str]:
    if len(evidence) > MAX_EVIDENCE_ITEMS:
        raise ValidationError(
            FieldViolation("evidence", f"must have at most {MAX_EVIDENCE_ITEMS} items")
        )
    for name, value in evidence.items():
        if not name or len(name) > 200 or len(value) > MAX_EVIDENCE_VALUE:
            raise ValidationError(
                FieldViolation(f"evidence[{name[:50]}]", "key or value is empty or too long")
            )
    return dict(evidence)


class ReviewService:
    def __init__(
        self,
        *,
        uow: Callable[[], UnitOfWork],
        wallet: WalletPort,
        sla: timedelta = DEFAULT_SLA,
        clock: Clock = _now,
    ) -> None:
        self._uow = uow
        self._wallet = wallet
        self._sla = sla
        self._clock = clock

    def view(self, case: ReviewCase) -> CaseView:
        now = self._clock()
        return CaseView(case, case.age(now), case.overdue(now, self._sla))

    async def list_cases(
        self, *, status: ReviewStatus = ReviewStatus.OPEN, page_size: int, page_token: str
    ) -> CasePage:
        """Cases with `status` (open by default), oldest first, a page at a time."""
        size, after = page_params(page_size, page_token)
        async with self._uow() as uow:
            rows = await uow.payments.list_cases(status=status, limit=size, after_seq=after)
        token = str(rows[-1][0]) if len(rows) == size else ""
        return CasePage([self.view(case) for _, case in rows], token)

    async def get_case(self, case_id: str) -> CaseEvidence:
        case_id = parse_id(case_id, "case_id")
        async with self._uow() as uow:
            case = await uow.payments.get_case(case_id)
            if case is None:
                raise NotFound("review case", case_id)
            payment = await uow.payments.get(case.payment_id)
            steps = await uow.payments.steps(case.payment_id)
        if payment is None:  # the foreign key makes this impossible
            raise NotFound("payment", case.payment_id)
        return CaseEvidence(self.view(case), payment, steps)

    async def resolve(
        self, *, case_id: str, resolution: Resolution | None, note: str, resolved_by: str
    ) -> CaseView:
        """Resolves a case once (REVIEW_ALREADY_RESOLVED after, also for a racing resolve).

        The payment decides what the resolution means (`Payment.resolve_review`): one in
        requires_manual_review moves to the resolution through its state machine, with a
        `review.resolved` step and the normal `payment.<status>` event; a final or settled
        one only records a decision that agrees with its status.

        Ledger entries: a deposit resolved as completed was never credited (its credit failed
        before it was compensated), so the wallet is credited first, outside the transaction,
        with the key `<payment_id>:review-credit` (idempotent: a retry or a racing resolve
        credits once); the wallet's refusal is the caller's answer and nothing is resolved.
        A deposit resolved as failed or refunded posts nothing: the money never reached the
        wallet. A withdrawal or refund whose capture was refused posts nothing either: the
        wallet has no debit outside a hold, so the operator's note records the adjustment.

        The payment is locked before its case, the order in which a case is opened. A
        resolution that credits claims the case first (`ReviewCase.claim`, committed before
        the wallet is called), so a racing resolve with another resolution is refused and the
        credit can never stand beside a different decision; a refused credit releases the
        claim.
        """
        case_id = parse_id(case_id, "case_id")
        if resolution is None:
            raise ValidationError(
                FieldViolation("resolution", "must be completed, failed or refunded")
            )
        note = require(note, "note", max_length=MAX_NOTE)
        resolved_by = require(resolved_by, "resolved_by")

        def no_case() -> ReviewCase:
            raise NotFound("review case", case_id)

        async def lock_case(store: PaymentStore, _: Payment) -> ReviewCase:
            case = await store.get_case(case_id, for_update=True)
            return case if case is not None else no_case()

        async def attempt() -> ReviewCase:
            payment_id, credited = await self._credit_if_needed(case_id, resolution)
            decision = Decision(resolution, note, resolved_by, self._clock())

            def decide(payment: Payment, case: ReviewCase) -> ReviewCase:
                case.resolve(decision)
                if payment.review_credit_needed(resolution) and not credited:
                    # It entered requires_manual_review after our look: credit, then retry.
                    raise ConcurrentUpdate(f"payment {payment_id} changed while resolving")
                payment.resolve_review(case_id, decision, credited=credited)
                return case

            # Not retried on its own: a lost race runs `attempt` again, credit check included.
            return await step_with(
                self._uow,
                payment_id,
                lock_case,
                decide,
                missing=no_case,
                then=lambda store, case: store.save_case(case),
                retry=False,
            )

        case = await retry_on_conflict(attempt)
        log.info(
            "review.resolved",
            case_id=case.case_id,
            payment_id=case.payment_id,
            resolution=resolution.value,
            resolved_by=resolved_by,
        )
        return self.view(case)

    async def open_case(
        self, *, payment_id: str, reason_code: str, reason: str, evidence: Mapping[str, str]
    ) -> CaseView:
        """Opens a case on the payment, or adds this evidence to its open one, through the
        payment's own path (`Payment.request_reconciliation_review`). Idempotent: a mismatch
        already recorded (same reason and evidence, in any case of the payment, resolved
        ones included) returns that case and records nothing."""
        payment_id = parse_id(payment_id, "payment_id")
        code = _openable(reason_code)
        reason = require(reason, "reason", max_length=MAX_NOTE)
        details = _evidence(evidence)
        key = mismatch_key(code, reason, details)

        async def known_case(store: PaymentStore, _: Payment) -> ReviewCase | None:
            return await store.case_with_key(payment_id, key)

        def request(
            payment: Payment, known: ReviewCase | None
        ) -> ReviewCase | Unchanged[ReviewCase | None] | None:
            if known is not None:
                return Unchanged(known)
            payment.request_reconciliation_review(reason, details, key=key)
            return None

        # The payment's row lock orders racing reports of the same mismatch.
        known = await step_with(self._uow, payment_id, known_case, request)
        if known is not None:
            return self.view(known)
        log.warning("review.opened", payment_id=payment_id, reason_code=code.value, key=key)
        async with self._uow() as uow:
            case = await uow.payments.case_with_key(payment_id, key)
        if case is None:  # the commit above wrote it
            raise NotFound("review case of payment", payment_id)
        return self.view(case)

    async def _credit_if_needed(self, case_id: str, resolution: Resolution) -> tuple[str, bool]:
        """Looks at the case and its payment (no locks: no wallet call inside a transaction)
        and posts the review credit the resolution needs; returns the payment id and whether
        it credited. A case resolved already is refused here, before any money moves."""
        async with self._uow() as uow:
            case = await uow.payments.get_case(case_id)
            payment = await uow.payments.get(case.payment_id) if case else None
        if case is None or payment is None:
            raise NotFound("review case", case_id)
        if case.status is not ReviewStatus.OPEN:
            raise ReviewAlreadyResolved(f"review case {case_id} is already resolved")
        if not payment.review_credit_needed(resolution):
            return payment.payment_id, False
        await self._claim(case_id, lambda case: case.claim(resolution))
        try:
            await self._wallet.credit(
                operation_ref=review_credit_ref(payment.payment_id),
                account_id=payment.destination_account_id,
                amount=payment.amount,
            )
        except (FailedPrecondition, NotFound):
            await self._claim(case_id, lambda case: case.release(resolution))
            raise
        return payment.payment_id, True

    async def _claim(self, case_id: str, change: Callable[[ReviewCase], None]) -> None:
        async with self._uow() as uow:
            case = await uow.payments.get_case(case_id, for_update=True)
            if case is None:
                raise NotFound("review case", case_id)
            change(case)
            await uow.payments.save_case(case)
            await uow.commit()

    async def alarm_overdue(self, *, limit: int = 100) -> list[CaseView]:
        """Logs a WARNING for each case open past the SLA, at most once per case per
        ALARM_EVERY, whatever the number of replicas (the alarm time is stored)."""
        now = self._clock()
        async with self._uow() as uow:
            cases = await uow.payments.alarm_overdue(
                opened_before=now - self._sla,
                alarmed_before=now - ALARM_EVERY,
                now=now,
                limit=limit,
            )
            await uow.commit()
        views = [self.view(case) for case in cases]
        for view in views:
            log.warning(
                "review.case_overdue",
                case_id=view.case.case_id,
                payment_id=view.case.payment_id,
                reason_code=view.case.reason_code.value,
                age_s=round(view.age.total_seconds()),
                sla_s=round(self._sla.total_seconds()),
            )
        return views
