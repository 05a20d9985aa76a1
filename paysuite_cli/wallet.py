"""`paysuite wallet ...`, `paysuite ledger verify` and `paysuite fx set`: operator commands that
work on the wallet database directly (the wallet service need not be running)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.config import Settings
from common.logging import configure_logging
from paysuite_cli.endpoints import locate

T = TypeVar("T")

wallet = typer.Typer(help="Maintain the wallet's read models and holds.", no_args_is_help=True)
ledger = typer.Typer(help="Check the wallet's books.", no_args_is_help=True)
fx = typer.Typer(help="Exchange rates used by cross-currency transfers.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(wallet, name="wallet")
    app.add_typer(ledger, name="ledger")
    app.add_typer(fx, name="fx")


def _run(work: Callable[[Settings, AsyncEngine], Awaitable[T]]) -> T:
    """Runs `work` against the running suite's wallet database (paysuite_cli.errors turns a
    refusal or an outage into one line and its exit code)."""
    from wallet_service.bootstrap import DATABASE

    settings = locate()
    url = DATABASE.url(settings)
    configure_logging(level="WARNING", fmt=settings.log_format)

    async def main() -> T:
        engine = db.create_engine(url, pool_size=2)
        try:
            return await work(settings, engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@ledger.command("verify")
def verify() -> None:
    """Check every transaction balances, every hash chain is intact, every projection equals
    its replay and no available balance is negative. Exits 1 on any finding."""
    from wallet_service.adapters.audit import verify_ledger

    report = _run(lambda _settings, engine: verify_ledger(engine))
    console.print(
        f"checked {report.accounts} accounts, {report.events} events, "
        f"{report.transactions} transactions"
    )
    if report.ok:
        console.print("[green]ledger verified: no findings[/green]")
        return
    table = Table(title=f"{len(report.findings)} findings", title_justify="left")
    for column in ("check", "subject", "detail"):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(finding.check, finding.subject, finding.detail)
    console.print(table)
    raise typer.Exit(1)


@wallet.command("rebuild-projections")
def rebuild_projections() -> None:
    """Recompute every account's balances and holds from its events."""
    from wallet_service.adapters.audit import rebuild_projections as rebuild

    rebuilt = _run(lambda _settings, engine: rebuild(engine))
    console.print(f"rebuilt {rebuilt.accounts} accounts; {len(rebuilt.changed)} differed")
    for account_id in rebuilt.changed:
        console.print(f"  corrected {account_id}")


@wallet.command("expire-holds")
def expire_holds(
    limit: Annotated[int, typer.Option(help="Accounts to sweep at most.")] = 1000,
) -> None:
    """Release every hold past its expiry."""
    from wallet_service.adapters.uow import WalletUnitOfWork
    from wallet_service.service_layer.services import WalletService

    async def work(_settings: Settings, engine: AsyncEngine) -> list[str]:
        service = WalletService(lambda: WalletUnitOfWork(engine))
        return await service.expire_holds(limit=limit)

    expired = _run(work)
    console.print(f"released {len(expired)} expired holds")


@fx.command("set")
def set_rate(
    base: Annotated[str, typer.Argument(help="Currency converted from, e.g. USD.")],
    quote: Annotated[str, typer.Argument(help="Currency converted to, e.g. EUR.")],
    rate: Annotated[str, typer.Argument(help="Exact rate: 0.9215 or a ratio like 1/3.")],
    source: Annotated[str, typer.Option(help="Where the rate comes from.")] = "manual",
) -> None:
    """Set the rate one unit of BASE buys in QUOTE (effective now)."""
    from wallet_service.adapters.uow import WalletUnitOfWork
    from wallet_service.service_layer.services import WalletService

    async def work(_settings: Settings, engine: AsyncEngine) -> str:
        service = WalletService(lambda: WalletUnitOfWork(engine))
        fx_rate = await service.set_rate(
            base=base.upper(), quote=quote.upper(), rate=rate, source=source
        )
        return f"1 {fx_rate.base} = {fx_rate.text} {fx_rate.quote} ({fx_rate.source})"

    console.print(_run(work))
