"""`paysuite payments withdraw|transfer|refund|cancel` against the running suite, through the CLI
as an operator types it."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from typer.testing import CliRunner

from paysuite.payment.v1 import payment_pb2 as P
from paysuite.wallet.v1 import wallet_pb2
from paysuite_cli.main import app
from tests.conftest import Suite
from tests.integration.helpers import Clients, clients, open_account, usd, wait_for_status
from tests.tokens import TEST_AUTH_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

runner = CliRunner()


async def cli(suite: Suite, *args: str) -> tuple[int, str]:
    """In a thread: the suite serves on this test's event loop, the CLI runs one of its own."""
    env = {
        "PAYSUITE_PAYMENT_TARGET": suite.payment_target,
        "PAYSUITE_WALLET_TARGET": suite.wallet_target,
        "PAYSUITE_AUTH_SECRET": TEST_AUTH_SECRET,
        "COLUMNS": "200",
    }
    result = await asyncio.to_thread(runner.invoke, app, ["payments", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def payment_id(output: str) -> str:
    found = re.search(r"^payment (\S+)$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


async def funded(c: Clients, amount_minor: int) -> str:
    account = await open_account(c)
    await c.wallet.Credit(
        wallet_pb2.CreditRequest(
            operation_ref=str(uuid.uuid4()), account_id=account, amount=usd(amount_minor)
        )
    )
    return account


async def available(c: Clients, account: str) -> int:
    balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account))
    return balance.available.amount_minor


async def test_transfer_and_withdraw_move_the_money_and_refusals_exit_1(suite: Suite) -> None:
    async with clients(suite) as c:
        source, target = await funded(c, 10_000), await open_account(c)

        code, output = await cli(suite, "transfer", source, target, "30.00", "USD", "--key", "t")
        assert code == 0, output
        assert "completed" in output

        code, output = await cli(
            suite, "withdraw", source, "10.25", "usd", "--destination", "acct_ok"
        )
        assert code == 0, output
        withdrawal = payment_id(output)
        await wait_for_status(c, withdrawal, {P.PAYMENT_STATUS_COMPLETED})

        assert await available(c, source) == 10_000 - 3_000 - 1_025
        assert await available(c, target) == 3_000

        code, output = await cli(
            suite, "withdraw", source, "1000", "USD", "--destination", "acct_ok"
        )
        assert code == 1
        assert "INSUFFICIENT_FUNDS" in output
        assert "Traceback" not in output

        code, output = await cli(suite, "cancel", withdrawal)
        assert code == 1
        assert "PAYMENT_NOT_CANCELLABLE" in output


async def test_refund_a_completed_deposit_in_part(suite: Suite) -> None:
    async with clients(suite) as c:
        account = await open_account(c)
        deposit = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=str(uuid.uuid4()),
                account_id=account,
                amount=usd(2_000),
                payment_method="pm_card_ok",
            )
        )
        await wait_for_status(c, deposit.payment_id, {P.PAYMENT_STATUS_COMPLETED})

        code, output = await cli(suite, "refund", deposit.payment_id, "5", "USD")
        assert code == 0, output
        refund = payment_id(output)
        assert deposit.payment_id in output
        await wait_for_status(c, refund, {P.PAYMENT_STATUS_COMPLETED})
        assert await available(c, account) == 1_500
