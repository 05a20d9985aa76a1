"""The manual-review workbench on real servers: a payment reaching requires_manual_review
(through the real repository: its case is written in the same transaction), then listed,
shown and resolved over gRPC and through `paysuite review`, with the real wallet crediting
and real row locks refusing a second and a racing resolve."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.auth import Role
from common.money import Money
from payment_service.adapters.uow import PaymentUnitOfWork
from payment_service.bootstrap import DATABASE
from payment_service.domain.model import Payment
from payment_service.domain.requests import DepositRequest
from payment_service.domain.saga import ProviderAnswer
from paysuite.payment.v1 import payment_pb2 as P
from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import Clients, clients, error_details, open_account
from tests.tokens import TEST_AUTH_SECRET, make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def engine(suite: Suite) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(DATABASE.url(suite.settings), pool_size=2)
    yield engine
    await engine.dispose()


async def in_review(engine: AsyncEngine, account_id: str, amount: int = 2500) -> str:
    """A deposit the provider charged, the wallet could not credit and whose compensation
    refund failed three times, saved as the saga would save it."""
    payment = Payment.deposit(
        DepositRequest(f"rv-{uuid.uuid4()}", account_id, Money(amount, "USD"), "pm_card_ok")
    )
    payment.mark_pending(f"op-{uuid.uuid4()}")
    payment.apply_charge_succeeded(
        operation_id=payment.gateway_operation_id, credited=False, credit_refused="closed"
    )
    for attempt in range(3):
        payment.compensation_call()
        payment.record_compensation_answer(
            ProviderAnswer.DECLINED, operation_id=f"r{attempt}", reason="refund_declined"
        )
    async with PaymentUnitOfWork(engine) as uow:
        await uow.payments.add(payment)
        await uow.commit()
    return payment.payment_id


async def open_case_of(c: Clients, payment_id: str) -> P.ReviewCase:
    token = ""
    while True:
        page = await c.payments.ListReviewCases(
            P.ListReviewCasesRequest(page_size=100, page_token=token)
        )
        for case in page.cases:
            if case.payment_id == payment_id:
                return case
        token = page.next_page_token
        if not token:
            raise AssertionError(f"no open case for {payment_id}")


async def outbox_events(engine: AsyncEngine, payment_id: str, event_type: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE aggregate_id = :a AND event_type = :t"),
            {"a": payment_id, "t": event_type},
        )
    return int(count or 0)


async def balance(c: Clients, account_id: str) -> int:
    b = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
    return int(b.total.amount_minor)


def resolve(case_id: str, resolution: int, by: str = "alice") -> P.ResolveReviewCaseRequest:
    return P.ResolveReviewCaseRequest(
        case_id=case_id, resolution=resolution, note="checked with the provider", resolved_by=by
    )


async def test_a_payment_in_review_has_an_open_case_with_its_evidence(
    suite: Suite, engine: AsyncEngine
) -> None:
    async with clients(suite) as c:
        payment_id = await in_review(engine, await open_account(c))
        case = await open_case_of(c, payment_id)
        assert case.reason_code == "COMPENSATION_FAILED"
        assert case.status == P.REVIEW_CASE_STATUS_OPEN
        assert not case.overdue
        found = await c.payments.GetReviewCase(P.GetReviewCaseRequest(case_id=case.case_id))
        assert found.payment.status == P.PAYMENT_STATUS_REQUIRES_MANUAL_REVIEW
        assert found.payment.gateway_operation_id
        assert [s.event_type for s in found.steps].count("refund.failed") == 3
        assert [e.source for e in found.review_case.evidence] == ["status.requires_manual_review"]


async def test_resolving_credits_moves_the_payment_and_emits_its_event_once(
    suite: Suite, engine: AsyncEngine
) -> None:
    alice = make_token("alice", Role.OPERATOR)
    async with clients(suite) as c, clients(suite, alice) as o:
        account_id = await open_account(c)
        payment_id = await in_review(engine, account_id)
        case = await open_case_of(c, payment_id)
        # Recorded under the operator's verified name, whatever the request says.
        resolved = await o.payments.ResolveReviewCase(
            resolve(case.case_id, P.REVIEW_RESOLUTION_COMPLETED, by="mallory")
        )
        assert (resolved.status, resolved.resolution, resolved.resolved_by) == (
            P.REVIEW_CASE_STATUS_RESOLVED,
            P.REVIEW_RESOLUTION_COMPLETED,
            "alice",
        )
        payment = await c.payments.GetPayment(P.GetPaymentRequest(payment_id=payment_id))
        assert payment.status == P.PAYMENT_STATUS_COMPLETED
        assert await balance(c, account_id) == 2500

        with pytest.raises(grpc.aio.AioRpcError) as again:
            await c.payments.ResolveReviewCase(resolve(case.case_id, P.REVIEW_RESOLUTION_FAILED))
        assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(again.value)[1] == "REVIEW_ALREADY_RESOLVED"
        assert await outbox_events(engine, payment_id, "payment.completed") == 1
        assert await balance(c, account_id) == 2500


async def test_two_racing_resolves_resolve_once_and_credit_once(
    suite: Suite, engine: AsyncEngine
) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        payment_id = await in_review(engine, account_id, amount=700)
        case = await open_case_of(c, payment_id)
        answers = await asyncio.gather(
            *(
                c.payments.ResolveReviewCase(
                    resolve(case.case_id, P.REVIEW_RESOLUTION_COMPLETED, by=f"op{i}")
                )
                for i in range(4)
            ),
            return_exceptions=True,
        )
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(refused) == 3, answers
        assert {error_details(r)[1] for r in refused} == {"REVIEW_ALREADY_RESOLVED"}
        assert await outbox_events(engine, payment_id, "payment.completed") == 1
        assert await balance(c, account_id) == 700


async def test_a_resolution_needs_a_known_case_and_a_decision(suite: Suite) -> None:
    async with clients(suite) as c:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await c.payments.GetReviewCase(P.GetReviewCaseRequest(case_id=str(uuid.uuid4())))
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as undecided:
            await c.payments.ResolveReviewCase(
                P.ResolveReviewCaseRequest(case_id=str(uuid.uuid4()), note="n", resolved_by="a")
            )
        assert undecided.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(undecided.value)[0] == ["resolution"]


async def paysuite(suite: Suite, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "PAYSUITE_PAYMENT_TARGET": suite.payment_target,
        "PAYSUITE_AUTH_SECRET": TEST_AUTH_SECRET,
        "COLUMNS": "250",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "paysuite"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_review_commands_list_show_and_resolve_once(
    suite: Suite, engine: AsyncEngine
) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        payment_id = await in_review(engine, account_id)
        case_id = (await open_case_of(c, payment_id)).case_id

    code, out = await paysuite(suite, "review", "list")
    assert code == 0, out
    assert case_id in out
    assert "COMPENSATION_FAILED" in out

    code, out = await paysuite(suite, "review", "show", case_id)
    assert code == 0, out
    assert payment_id in out
    assert "refund.failed" in out

    args = ("review", "resolve", case_id, "--as", "refunded", "--note", "refunded by hand")
    code, out = await paysuite(suite, *args, "--by", "carol")
    assert code == 0, out
    assert "as refunded" in out
    assert "carol" in out

    code, out = await paysuite(suite, *args)
    assert code == 1
    assert "FAILED_PRECONDITION REVIEW_ALREADY_RESOLVED" in out
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
