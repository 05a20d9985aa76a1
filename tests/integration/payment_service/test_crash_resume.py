"""A payment service killed right after CreateDeposit's commit, before it answered and before
any saga step ran: once it is started again, the deposit completes, charged and credited once.

The suite here has no other payment service (own databases and streams), so nothing but the
restarted process can resume the saga.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from common.config import Settings
from common.grpc.auth import bearer_channel
from paysuite.payment.v1 import payment_pb2 as P
from paysuite.payment.v1 import payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.conftest import InfraUrls, Suite, migrated_databases, running_suite
from tests.integration.helpers import usd
from tests.processes import Started, start
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def lonely_suite(base_settings: Settings, infra_urls: InfraUrls) -> AsyncIterator[Suite]:
    run = uuid.uuid4().hex[:8]
    settings = base_settings.model_copy(
        update={"database_prefix": f"c{run}_", "stream_prefix": f"c{run}."}
    )
    with migrated_databases(settings, drop=True) as migrated:
        async with running_suite(migrated, with_payment=False) as suite:
            yield suite


def payment_env(suite: Suite, **extra: str) -> dict[str, str]:
    s = suite.settings
    return {
        "PAYSUITE_DATABASE_URL": s.require_database_url(),
        "PAYSUITE_REDIS_URL": s.require_redis_url(),
        "PAYSUITE_DATABASE_PREFIX": s.database_prefix,
        "PAYSUITE_STREAM_PREFIX": s.stream_prefix,
        "PAYSUITE_WALLET_TARGET": suite.wallet_target,
        "PAYSUITE_GATEWAY_TARGET": suite.gateway_target,
        "PAYSUITE_RELAY_POLL_INTERVAL_MS": "100",
        "PAYSUITE_CONSUMER_BLOCK_MS": "100",
        "PAYSUITE_LOG_FORMAT": "json",
        "PAYSUITE_PAYMENT_LISTEN": "127.0.0.1:0",
        **extra,
    }


def port_of(started: Started) -> int:
    for line in started.log.splitlines():
        record = json.loads(line)
        if record.get("event") == "service.started":
            return int(record["port"])
    raise AssertionError(started.log.decode())


async def test_a_deposit_whose_process_died_right_after_its_commit_completes_after_restart(
    lonely_suite: Suite,
) -> None:
    suite = lonely_suite
    async with bearer_channel(suite.wallet_target, make_token()) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        account = await wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(
                operation_ref=str(uuid.uuid4()), owner_id="o", currency="USD"
            )
        )

    doomed = await start(
        "payment_service",
        b"service.started",
        **payment_env(suite, PAYSUITE_FAULTS="payment.deposit_committed"),
    )
    async with bearer_channel(f"127.0.0.1:{port_of(doomed)}", make_token()) as channel:
        payments = payment_pb2_grpc.PaymentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as died:
            await payments.CreateDeposit(
                P.CreateDepositRequest(
                    idempotency_key=f"crash-{uuid.uuid4()}",
                    account_id=account.account_id,
                    amount=usd(4200),
                ),
                wait_for_ready=False,
            )
        assert died.value.code() is grpc.StatusCode.UNAVAILABLE
    assert await doomed.process.wait() == 137

    restarted = await start("payment_service", b"service.started", **payment_env(suite))
    try:
        async with bearer_channel(f"127.0.0.1:{port_of(restarted)}", make_token()) as channel:
            payments = payment_pb2_grpc.PaymentServiceStub(channel)
            listed = await payments.ListPayments(
                P.ListPaymentsRequest(account_id=account.account_id)
            )
            (payment,) = listed.payments  # committed before the crash, never answered
            done = await wait_completed(payments, payment.payment_id)
        async with bearer_channel(suite.wallet_target, make_token()) as channel:
            balance = await wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
                wallet_pb2.GetBalanceRequest(account_id=account.account_id)
            )
        assert done.status == P.PAYMENT_STATUS_COMPLETED
        assert balance.total == usd(4200)
    finally:
        await restarted.stop()


async def wait_completed(
    payments: payment_pb2_grpc.PaymentServiceAsyncStub, payment_id: str
) -> P.Payment:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        payment = await payments.GetPayment(P.GetPaymentRequest(payment_id=payment_id))
        if payment.status == P.PAYMENT_STATUS_COMPLETED:
            return payment
        await asyncio.sleep(0.1)
    raise AssertionError(f"payment {payment_id} is {P.PaymentStatus.Name(payment.status)}")


async def _funded(suite: Suite, amount: int) -> str:
    async with bearer_channel(suite.wallet_target, make_token()) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        account = await wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(
                operation_ref=str(uuid.uuid4()), owner_id="o", currency="USD"
            )
        )
        if amount:
            await wallet.Credit(
                wallet_pb2.CreditRequest(
                    operation_ref=str(uuid.uuid4()),
                    account_id=account.account_id,
                    amount=usd(amount),
                )
            )
    return account.account_id


async def _balance(suite: Suite, account_id: str) -> tuple[int, int]:
    async with bearer_channel(suite.wallet_target, make_token()) as channel:
        b = await wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
            wallet_pb2.GetBalanceRequest(account_id=account_id)
        )
    return b.available.amount_minor, b.held.amount_minor


@pytest.mark.parametrize(
    ("fault", "create"),
    [
        # The request path: the hold exists in the wallet; the payment does not know it yet.
        ("payment.hold_placed", "withdrawal"),
        # The request path: the money moved in the wallet; the payment is still initiated.
        ("payment.transfer_moved", "transfer"),
        # The payout step: the provider has the payout; `pending` is not recorded.
        ("payment.provider_answered", "withdrawal"),
        # payout.succeeded: the hold is captured; `completed` is not recorded.
        ("payment.hold_captured", "withdrawal"),
        # charge.succeeded: the wallet is credited; `completed` is not recorded.
        ("payment.credited", "deposit"),
    ],
)
async def test_a_saga_killed_between_an_effect_and_its_record_finishes_once_after_restart(
    lonely_suite: Suite, fault: str, create: str
) -> None:
    suite = lonely_suite
    source = await _funded(suite, 5000)
    target = await _funded(suite, 0)
    doomed = await start(
        "payment_service", b"service.started", **payment_env(suite, PAYSUITE_FAULTS=fault)
    )
    async with bearer_channel(f"127.0.0.1:{port_of(doomed)}", make_token()) as channel:
        payments = payment_pb2_grpc.PaymentServiceStub(channel)
        key = f"crash-{uuid.uuid4()}"
        if create == "withdrawal":
            call = payments.CreateWithdrawal(
                P.CreateWithdrawalRequest(
                    idempotency_key=key, account_id=source, amount=usd(1000), destination="acct_ok"
                ),
                wait_for_ready=False,
            )
        elif create == "transfer":
            call = payments.CreateTransfer(
                P.CreateTransferRequest(
                    idempotency_key=key,
                    source_account_id=source,
                    destination_account_id=target,
                    amount=usd(1000),
                ),
                wait_for_ready=False,
            )
        else:
            call = payments.CreateDeposit(
                P.CreateDepositRequest(idempotency_key=key, account_id=target, amount=usd(1000)),
                wait_for_ready=False,
            )
        with contextlib.suppress(grpc.aio.AioRpcError):  # the request path may be what dies
            await call
    assert await asyncio.wait_for(doomed.process.wait(), timeout=30) == 137

    restarted = await start(
        "payment_service",
        b"service.started",
        # The dead process's unacknowledged entries are reclaimed once idle this long.
        **payment_env(
            suite, PAYSUITE_SAGA_RESUME_AFTER_S="0.5", PAYSUITE_CONSUMER_CLAIM_IDLE_MS="500"
        ),
    )
    try:
        async with bearer_channel(f"127.0.0.1:{port_of(restarted)}", make_token()) as channel:
            payments = payment_pb2_grpc.PaymentServiceStub(channel)
            owner = target if create == "deposit" else source
            listed = await payments.ListPayments(P.ListPaymentsRequest(account_id=owner))
            (payment,) = listed.payments
            await wait_completed(payments, payment.payment_id)
        if create == "deposit":
            assert await _balance(suite, target) == (1000, 0)  # credited once
        else:
            assert await _balance(suite, source) == (4000, 0)  # taken once, nothing held
        if create == "transfer":
            assert await _balance(suite, target) == (1000, 0)
    finally:
        await restarted.stop()
