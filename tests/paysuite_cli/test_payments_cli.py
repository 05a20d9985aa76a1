"""`paysuite payments withdraw|transfer|refund|cancel` against a fake payment service: what is
sent, what is printed, and how a refusal ends the command."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from typer.testing import CliRunner

from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite_cli.main import app
from paysuite_cli.payments import AmountError, parse_money

P = payment_pb2
runner = CliRunner()
# A token of the caller's own (PAYSUITE_TOKEN): sent as is, no key needed to mint one.
ENV = {"PAYSUITE_PAYMENT_TARGET": "127.0.0.1:1", "COLUMNS": "200", "PAYSUITE_TOKEN": "t0ken"}


class FakePayments:
    """Records each request and answers with a payment built from it, or raises `error`."""

    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.error = error

    async def _answer(self, name: str, request: Any, **payment: Any) -> P.Payment:
        self.requests.append((name, request))
        if self.error is not None:
            raise self.error
        return P.Payment(payment_id="pay-1", **payment)

    async def CreateWithdrawal(self, request: Any, **_options: object) -> P.Payment:
        return await self._answer(
            "CreateWithdrawal",
            request,
            kind=P.PAYMENT_KIND_WITHDRAWAL,
            status=P.PAYMENT_STATUS_PENDING,
            amount=request.amount,
            source_account_id=request.account_id,
            destination=request.destination,
            idempotency_key=request.idempotency_key,
        )

    async def CreateTransfer(self, request: Any, **_options: object) -> P.Payment:
        return await self._answer(
            "CreateTransfer",
            request,
            kind=P.PAYMENT_KIND_TRANSFER,
            status=P.PAYMENT_STATUS_COMPLETED,
            amount=request.amount,
            source_account_id=request.source_account_id,
            destination_account_id=request.destination_account_id,
            idempotency_key=request.idempotency_key,
        )

    async def RefundPayment(self, request: Any, **_options: object) -> P.Payment:
        return await self._answer(
            "RefundPayment",
            request,
            kind=P.PAYMENT_KIND_REFUND,
            status=P.PAYMENT_STATUS_PENDING,
            amount=money_pb2.Money(amount_minor=500, currency="USD"),
            parent_payment_id=request.payment_id,
            idempotency_key=request.idempotency_key,
        )

    async def CancelPayment(self, request: Any, **_options: object) -> P.Payment:
        return await self._answer(
            "CancelPayment",
            request,
            kind=P.PAYMENT_KIND_WITHDRAWAL,
            status=P.PAYMENT_STATUS_CANCELLED,
            amount=money_pb2.Money(amount_minor=500, currency="USD"),
        )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePayments:
    payments = FakePayments()
    monkeypatch.setattr(payment_pb2_grpc, "PaymentServiceStub", lambda _channel: payments)
    return payments


def refusal(code: grpc.StatusCode, reason: str, message: str) -> grpc.aio.AioRpcError:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="paysuite")
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, message)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["payments", *args], env=ENV)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("amount", "currency", "minor", "code"),
    [
        ("12.50", "USD", 1250, "USD"),
        ("12.5", "usd", 1250, "USD"),
        ("12", "USD", 1200, "USD"),
        ("0.01", "EUR", 1, "EUR"),
        ("1000", "JPY", 1000, "JPY"),
        ("1.234", "KWD", 1234, "KWD"),
        ("0.1", "USD", 10, "USD"),
    ],
)
def test_an_amount_in_major_units_becomes_exact_minor_units(
    amount: str, currency: str, minor: int, code: str
) -> None:
    assert parse_money(amount, currency) == money_pb2.Money(amount_minor=minor, currency=code)


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.505", "USD", "2 decimal places"),
        ("1.5", "JPY", "0 decimal places"),
        ("0", "USD", "positive"),
        ("0.00", "USD", "positive"),
        ("-5", "USD", "not a number"),
        ("1e3", "USD", "not a number"),
        ("12,50", "USD", "not a number"),
        ("", "USD", "not a number"),
        ("12", "XXX", "unsupported currency"),
        ("99999999999999999999", "USD", "too large"),
    ],
)
def test_an_amount_that_is_not_exact_is_refused(amount: str, currency: str, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        parse_money(amount, currency)


def test_withdraw_sends_minor_units_and_the_given_key(fake: FakePayments) -> None:
    code, output = invoke("withdraw", "acc-1", "12.50", "USD", "--destination", "acct_ok")
    assert code == 0, output
    [(name, request)] = fake.requests
    assert name == "CreateWithdrawal"
    assert request.account_id == "acc-1"
    assert request.amount == money_pb2.Money(amount_minor=1250, currency="USD")
    assert request.destination == "acct_ok"
    assert request.idempotency_key.startswith("cli-")
    assert "pending" in output
    assert "12.50 USD" in output
    assert request.idempotency_key in output  # printed, so it can be repeated


def test_withdraw_needs_a_destination(fake: FakePayments) -> None:
    code, _output = invoke("withdraw", "acc-1", "12.50", "USD")
    assert code == 2
    assert fake.requests == []


def test_transfer_sends_both_accounts_and_the_key(fake: FakePayments) -> None:
    code, output = invoke("transfer", "acc-1", "acc-2", "3", "EUR", "--key", "k-7")
    assert code == 0, output
    [(name, request)] = fake.requests
    assert name == "CreateTransfer"
    assert (request.source_account_id, request.destination_account_id) == ("acc-1", "acc-2")
    assert request.amount == money_pb2.Money(amount_minor=300, currency="EUR")
    assert request.idempotency_key == "k-7"
    assert "completed" in output


def test_refund_without_an_amount_is_a_full_refund(fake: FakePayments) -> None:
    code, output = invoke("refund", "pay-0")
    assert code == 0, output
    [(name, request)] = fake.requests
    assert name == "RefundPayment"
    assert request.payment_id == "pay-0"
    assert not request.HasField("amount")


def test_refund_with_an_amount_is_partial(fake: FakePayments) -> None:
    code, output = invoke("refund", "pay-0", "5", "USD", "--key", "r-1")
    assert code == 0, output
    [(_name, request)] = fake.requests
    assert request.amount == money_pb2.Money(amount_minor=500, currency="USD")
    assert request.idempotency_key == "r-1"


def test_refund_with_an_amount_but_no_currency_is_refused(fake: FakePayments) -> None:
    code, output = invoke("refund", "pay-0", "5")
    assert code == 2
    assert "both AMOUNT and CURRENCY" in output
    assert fake.requests == []


def test_cancel_prints_the_cancelled_payment(fake: FakePayments) -> None:
    code, output = invoke("cancel", "pay-1")
    assert code == 0, output
    assert fake.requests[0][1].payment_id == "pay-1"
    assert "cancelled" in output


def test_a_bad_amount_exits_2_without_calling(fake: FakePayments) -> None:
    code, output = invoke("transfer", "a", "b", "1.001", "USD")
    assert code == 2
    assert "USD has 2 decimal places" in output
    assert fake.requests == []


def test_a_refusal_is_one_line_with_its_reason_and_exit_1(fake: FakePayments) -> None:
    fake.error = refusal(
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", "available 1.00 USD"
    )
    code, output = invoke("withdraw", "acc-1", "12.50", "USD", "--destination", "acct_ok")
    assert code == 1
    assert output.strip() == "FAILED_PRECONDITION INSUFFICIENT_FUNDS: available 1.00 USD"


def test_a_suite_that_is_not_running_is_one_line_and_exit_2() -> None:
    code, output = invoke("cancel", "pay-1")  # nothing listens on port 1
    assert code == 2
    assert output.startswith("cannot reach the suite (UNAVAILABLE)")
    assert "Traceback" not in output
