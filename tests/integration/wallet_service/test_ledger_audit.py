"""The books prove themselves: after a random workload the projections equal their replay,
and `ledger verify` reports a tampered event, a deleted entry and an unbalanced transaction
written behind the service's back. The journal refuses UPDATE and DELETE."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy.exc
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner, Result

from common.errors import FailedPrecondition
from common.money import Money
from paysuite_cli.main import app
from tests.integration.wallet_service.conftest import PrivateWallet
from wallet_service.adapters.audit import rebuild_projections, verify_ledger
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def ref() -> str:
    return str(uuid.uuid4())


async def random_workload(service: WalletService, *, seed: int, steps: int = 120) -> list[str]:
    rng = random.Random(seed)
    await service.set_rate(base="USD", quote="EUR", rate="0.9215", source="test")
    accounts = [
        (await service.open_account(owner_id=f"o{i}", currency=cur, operation_ref=ref())).account_id
        for i, cur in enumerate(("USD", "USD", "USD", "EUR"))
    ]
    usd, eur = accounts[:3], accounts[3]
    holds: list[str] = []
    for account_id in usd:
        await service.credit(operation_ref=ref(), account_id=account_id, amount=Money(5_000, "USD"))
    for _ in range(steps):
        account_id = rng.choice(usd)
        amount = Money(rng.randint(1, 900), "USD")
        choice = rng.randrange(6)
        try:
            if choice == 0:
                await service.credit(operation_ref=ref(), account_id=account_id, amount=amount)
            elif choice == 1:
                await service.debit(operation_ref=ref(), account_id=account_id, amount=amount)
            elif choice == 2:
                hold = await service.place_hold(
                    operation_ref=ref(), account_id=account_id, amount=amount
                )
                holds.append(hold.hold_id)
            elif choice == 3 and holds:
                hold_id = holds.pop(rng.randrange(len(holds)))
                if rng.random() < 0.5:
                    await service.capture_hold(operation_ref=ref(), hold_id=hold_id)
                else:
                    await service.release_hold(operation_ref=ref(), hold_id=hold_id)
            elif choice == 4:
                await service.transfer(
                    operation_ref=ref(),
                    source_account_id=account_id,
                    destination_account_id=rng.choice([a for a in accounts if a != account_id]),
                    amount=amount,
                )
            else:
                await service.freeze(operation_ref=ref(), account_id=account_id)
                await service.unfreeze(operation_ref=ref(), account_id=account_id)
        except FailedPrecondition:
            pass  # not enough money for this step: part of the workload
    assert eur
    return accounts


async def behind_the_back(engine: AsyncEngine, statement: str, **params: object) -> None:
    """A superuser writing around the service: the append-only triggers are bypassed."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(statement), params)


async def test_after_a_random_workload_the_books_verify_and_rebuild_changes_nothing(
    private_wallet: PrivateWallet,
) -> None:
    await random_workload(private_wallet.service, seed=1)
    report = await verify_ledger(private_wallet.engine)
    rebuilt = await rebuild_projections(private_wallet.engine)
    assert report.findings == []
    assert report.accounts == 4
    assert report.events > 100
    assert rebuilt.changed == []


async def test_rebuild_corrects_a_projection_written_behind_the_back(
    private_wallet: PrivateWallet,
) -> None:
    accounts = await random_workload(private_wallet.service, seed=2, steps=30)
    await behind_the_back(
        private_wallet.engine,
        "UPDATE accounts SET total_minor = total_minor + 1 WHERE account_id = :id",
        id=accounts[0],
    )
    before = await verify_ledger(private_wallet.engine)
    rebuilt = await rebuild_projections(private_wallet.engine)
    after = await verify_ledger(private_wallet.engine)
    assert {f.check for f in before.findings} == {"projection", "journal"}
    assert rebuilt.changed == [accounts[0]]
    assert after.findings == []


async def test_verify_reports_each_kind_of_tampering(private_wallet: PrivateWallet) -> None:
    engine = private_wallet.engine
    accounts = await random_workload(private_wallet.service, seed=3, steps=40)
    assert (await verify_ledger(engine)).ok

    # 1. An event's amount rewritten: its hash no longer matches.
    await behind_the_back(
        engine,
        "UPDATE account_events SET payload = jsonb_set(payload, '{amount_minor}', '1')"
        " WHERE account_id = :id AND version = 2",
        id=accounts[1],
    )
    findings = (await verify_ledger(engine)).findings
    assert ("chain", accounts[1]) in {(f.check, f.subject) for f in findings}

    # 2. A journal entry deleted: its transaction no longer balances.
    async with engine.connect() as conn:
        seq, txn = (
            await conn.execute(
                text(
                    "SELECT seq, transaction_id FROM ledger_entries WHERE account_id = :id"
                    " ORDER BY seq LIMIT 1"
                ),
                {"id": accounts[2]},
            )
        ).one()
    await behind_the_back(engine, "DELETE FROM ledger_entries WHERE seq = :seq", seq=seq)
    findings = (await verify_ledger(engine)).findings
    assert ("balance", str(txn)) in {(f.check, f.subject) for f in findings}
    assert ("journal", accounts[2]) in {(f.check, f.subject) for f in findings}

    # 3. An unbalanced transaction inserted.
    forged = str(uuid.uuid4())
    await behind_the_back(
        engine,
        "WITH t AS (INSERT INTO ledger_transactions (transaction_id, operation_ref, kind)"
        " VALUES (:txn, :ref, 'credit'))"
        " INSERT INTO ledger_entries (entry_id, transaction_id, account_id, amount_minor, currency)"
        " VALUES (gen_random_uuid(), :txn, :account, 500, 'USD')",
        txn=forged,
        ref=ref(),
        account=accounts[0],
    )
    findings = (await verify_ledger(engine)).findings
    assert ("balance", forged) in {(f.check, f.subject) for f in findings}


async def test_the_journal_refuses_updates_and_deletes(private_wallet: PrivateWallet) -> None:
    await random_workload(private_wallet.service, seed=4, steps=5)
    for statement in (
        "UPDATE ledger_entries SET amount_minor = 0",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_transactions SET kind = 'debit'",
        "DELETE FROM account_events",
        "TRUNCATE ledger_entries CASCADE",
    ):
        async with private_wallet.engine.begin() as conn:
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
                await conn.execute(text(statement))


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The CLI configures logging onto the runner's captured stderr, which closes after each
    invocation: put back what the rest of the session logs to."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    structlog.configure(**saved_structlog)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.mark.usefixtures("logging_restored")
async def test_cli_verify_exits_non_zero_on_findings(
    private_wallet: PrivateWallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = private_wallet.settings
    monkeypatch.setenv("PAYSUITE_DATABASE_URL", settings.require_database_url())
    monkeypatch.setenv("PAYSUITE_DATABASE_PREFIX", settings.database_prefix)
    runner = CliRunner()

    async def paysuite(*args: str) -> Result:
        # The CLI runs its own event loop: give it a thread of its own.
        return await asyncio.to_thread(runner.invoke, app, list(args))

    clean = await paysuite("ledger", "verify")
    fx = await paysuite("fx", "set", "USD", "JPY", "150.5")
    rebuilt = await paysuite("wallet", "rebuild-projections")
    expired = await paysuite("wallet", "expire-holds")
    await private_wallet.service.open_account(owner_id="x", currency="USD", operation_ref="r")
    await behind_the_back(
        private_wallet.engine, "UPDATE accounts SET total_minor = 7 WHERE owner_id = 'x'"
    )
    dirty = await paysuite("ledger", "verify")
    assert clean.exit_code == 0, clean.output
    assert "no findings" in clean.output
    assert fx.exit_code == 0
    assert "1 USD = 150.5 JPY (manual)" in fx.output
    assert rebuilt.exit_code == 0
    assert expired.exit_code == 0
    assert dirty.exit_code == 1
    assert "projection" in dirty.output
