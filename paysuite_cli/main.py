"""`paysuite`: run the suite, migrate its databases, drive a demo, inspect payments and events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from common.config import ConfigError, Settings, load_settings
from common.logging import configure_logging
from devstack import supervisor
from devstack.embedded import EmbeddedServers, start_embedded
from paysuite.common.v1 import money_pb2
from paysuite_cli import bench as bench_module
from paysuite_cli import chaos as chaos_module
from paysuite_cli import credentials, endpoints, errors, ops
from paysuite_cli import demo as demo_module
from paysuite_cli import inspect as inspect_module
from paysuite_cli import payments as payments_module
from paysuite_cli import providers as providers_module
from paysuite_cli import recover as recover_module
from paysuite_cli import review as review_module
from paysuite_cli import wallet as wallet_cli

app = typer.Typer(
    cls=errors.Cli, help=__doc__, epilog=errors.EPILOG, no_args_is_help=True, add_completion=False
)


def _show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"paysuite {version('paysuite')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """`paysuite`: run the suite, migrate its databases, drive a demo, inspect payments and
    events."""


payments = typer.Typer(help="Inspect payments, and move money.", no_args_is_help=True)
events = typer.Typer(help="Inspect event streams.", no_args_is_help=True)
review = typer.Typer(
    help="The manual-review workbench: payments an operator must decide.", no_args_is_help=True
)
app.add_typer(payments, name="payments")
app.add_typer(review, name="review")
app.add_typer(events, name="events")
app.command("providers")(providers_module.providers)
app.add_typer(providers_module.sim, name="sim")
wallet_cli.register(app)
console = Console()
app.command()(bench_module.bench)
app.command()(bench_module.soak)
app.command()(chaos_module.chaos)
token = typer.Typer(help="Bearer tokens for the suite's gRPC APIs.", no_args_is_help=True)
token.command("issue")(credentials.issue)
app.add_typer(token, name="token")
app.command()(recover_module.recover)
ops.register(app, events)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _progress(line: str) -> None:
    console.print(f"[dim]{line}[/dim]")


@contextmanager
def _servers(settings: Settings) -> Iterator[tuple[str, str, EmbeddedServers | None]]:
    """The configured servers, or embedded ones when no URL is set."""
    if settings.database_url and settings.redis_url:
        yield settings.database_url, settings.redis_url, None
        return
    embedded = start_embedded(settings.data_dir, progress=_progress)
    try:
        yield (
            settings.database_url or embedded.database_url,
            settings.redis_url or embedded.redis_url,
            embedded,
        )
    finally:
        _progress("stopping PostgreSQL and Redis ...")
        embedded.stop()


def _migrate_all(settings: Settings) -> None:
    from gateway_service.bootstrap import DATABASE as GATEWAY_DB
    from payment_service.bootstrap import DATABASE as PAYMENT_DB
    from wallet_service.bootstrap import DATABASE as WALLET_DB

    for database in (WALLET_DB, PAYMENT_DB, GATEWAY_DB):
        database.migrate(settings)
        console.print(f"migrated database [bold]{settings.database_prefix}{database.name}[/]")


@app.command()
def migrate() -> None:
    """Create the service databases if needed and apply every migration."""
    settings = _settings()
    configure_logging(level="WARNING", fmt=settings.log_format)
    if settings.database_url:
        _migrate_all(settings)
        return
    try:
        with supervisor.exclusive(settings.data_dir), _servers(settings) as (url, _redis, _):
            _migrate_all(settings.model_copy(update={"database_url": url}))
    except supervisor.AlreadyRunning:
        # The folder's suite is running: migrate its server rather than start a second one.
        _migrate_all(endpoints.locate(settings))


@app.command()
def up() -> None:
    """Start the whole suite (embedded PostgreSQL and Redis unless PAYSUITE_*_URL are set);
    restart whatever dies; stop on Ctrl-C or SIGTERM."""
    settings = _settings()
    configure_logging(level="WARNING", fmt=settings.log_format)
    stop = supervisor.StopSignal()
    stop.install()
    try:
        with supervisor.exclusive(settings.data_dir):
            processes = supervisor.plan(settings)
            supervisor.check_ports_free(processes)
            _up(settings, processes, stop)
    except supervisor.AlreadyRunning as exc:
        console.print(f"[red]paysuite is not starting: {exc}[/red]")
        raise typer.Exit(1) from None


def _up(
    settings: Settings, processes: list[supervisor.Process], stop: supervisor.StopSignal
) -> None:
    with _servers(settings) as (database_url, redis_url, embedded):
        if embedded:
            console.print(f"PostgreSQL and Redis: embedded, data in {settings.data_dir.resolve()}")
        _migrate_all(settings.model_copy(update={"database_url": database_url}))
        env = supervisor.child_env(settings, database_url, redis_url)
        children: list[supervisor.Child] = []
        try:
            _start(processes, env, children, stop)
            if stop():
                return
            wallet_target = supervisor.wallet_target(processes)
            with endpoints.published(settings.data_dir, settings, wallet_target=wallet_target):
                supervisor.publish_metrics(settings.data_dir, processes)
                _print_endpoints(processes)
                _watch(children, embedded, stop)
        finally:
            console.print("stopping paysuite ...")
            supervisor.stop_all([child.popen for child in children])


def _start(
    processes: list[supervisor.Process],
    env: dict[str, str],
    children: list[supervisor.Child],
    stop: supervisor.StopSignal,
) -> None:
    """Starts the processes stage by stage, each once the stages before it are ready."""
    for stage in sorted({proc.stage for proc in processes}):
        batch = [proc for proc in processes if proc.stage == stage]
        _progress(f"starting {', '.join(proc.name for proc in batch)} ...")
        children.extend(supervisor.Child(proc, env, supervisor.spawn(proc, env)) for proc in batch)
        try:
            supervisor.wait_ready(batch, {c.name: c.popen for c in children}, stop)
        except RuntimeError as exc:
            console.print(f"[red]paysuite failed to start: {exc}[/red]")
            raise typer.Exit(1) from None


def _watch(
    children: list[supervisor.Child],
    embedded: EmbeddedServers | None,
    stop: supervisor.StopSignal,
) -> None:
    units: list[supervisor.Unit] = [*children]
    if embedded is not None:
        units += [supervisor.EmbeddedPostgres(embedded), supervisor.EmbeddedRedis(embedded)]
    watcher = supervisor.Supervisor(units, say=lambda line: console.print(f"[yellow]{line}[/]"))
    try:
        watcher.watch(stop)
    except supervisor.CrashLoop as exc:
        console.print(f"[red]{exc}: it is crash-looping, so the suite stops[/red]")
        raise typer.Exit(1) from None


def _print_endpoints(processes: list[supervisor.Process]) -> None:
    table = Table(title="paysuite is up", title_justify="left")
    table.add_column("process")
    table.add_column("endpoint")
    table.add_column("status")
    table.add_column("metrics")
    for proc in processes:
        status = "SERVING" if proc.kind == "grpc" else "ok"
        table.add_row(proc.name, proc.endpoint, f"[green]{status}[/green]", proc.metrics_url)
    console.print(table)
    console.print("Try: [bold]paysuite demo[/bold] (in another terminal)   Stop: Ctrl-C")


@app.command()
def demo(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each payment.")] = 30.0,
) -> None:
    """Open an account, make a successful and a declined deposit, show every status change."""
    settings = endpoints.locate(_settings())
    ok = asyncio.run(demo_module.run(settings, console, timeout_s=timeout))
    if not ok:
        raise typer.Exit(1)


@payments.command("get")
def payments_get(payment_id: str) -> None:
    """Show a payment and its status history."""
    settings = endpoints.locate(_settings())
    asyncio.run(inspect_module.show_payment(settings, console, payment_id))


@payments.command("events")
def payments_events(payment_id: str) -> None:
    """Show a payment's audit trail: every saga step and transition, in order."""
    settings = endpoints.locate(_settings())
    asyncio.run(inspect_module.show_audit_trail(settings, console, payment_id))


@payments.command("watch")
def payments_watch(payment_id: str) -> None:
    """Follow a payment: every state it reaches, until a terminal one."""
    settings = endpoints.locate(_settings())
    asyncio.run(inspect_module.watch_payment(settings, console, payment_id))


KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Idempotency key: repeat a request safely (default: a new one)."),
]
AmountArg = Annotated[str, typer.Argument(help="In major units, exact: 12.50")]
CurrencyArg = Annotated[str, typer.Argument(help="ISO 4217 code, e.g. USD")]


def _money(amount: str, currency: str) -> money_pb2.Money:
    try:
        return payments_module.parse_money(amount, currency)
    except payments_module.AmountError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@payments.command("withdraw")
def payments_withdraw(
    account_id: Annotated[str, typer.Argument(help="The account money leaves.")],
    amount: AmountArg,
    currency: CurrencyArg,
    destination: Annotated[
        str, typer.Option(help="Payout destination token (simulator: acct_fail is declined).")
    ],
    key: KeyOpt = None,
) -> None:
    """Pay money out of an account; it is held at once and leaves when the payout completes."""
    money = _money(amount, currency)
    settings = _settings()
    asyncio.run(
        payments_module.withdraw(
            settings,
            console,
            account_id=account_id,
            amount=money,
            destination=destination,
            key=key or payments_module.new_key(),
        )
    )


@payments.command("transfer")
def payments_transfer(
    source_account_id: Annotated[str, typer.Argument(metavar="FROM")],
    destination_account_id: Annotated[str, typer.Argument(metavar="TO")],
    amount: AmountArg,
    currency: CurrencyArg,
    key: KeyOpt = None,
) -> None:
    """Move money between two accounts in one wallet operation."""
    money = _money(amount, currency)
    settings = _settings()
    asyncio.run(
        payments_module.transfer(
            settings,
            console,
            source_account_id=source_account_id,
            destination_account_id=destination_account_id,
            amount=money,
            key=key or payments_module.new_key(),
        )
    )


@payments.command("refund")
def payments_refund(
    payment_id: Annotated[str, typer.Argument(help="The completed deposit to refund.")],
    amount: Annotated[str | None, typer.Argument(help="Omit for a full refund.")] = None,
    currency: Annotated[str | None, typer.Argument(help="Given with AMOUNT.")] = None,
    key: KeyOpt = None,
) -> None:
    """Refund a completed deposit, fully or in part."""
    if (amount is None) != (currency is None):
        console.print("[red]give both AMOUNT and CURRENCY, or neither for a full refund[/red]")
        raise typer.Exit(2)
    money = _money(amount, currency) if amount is not None and currency is not None else None
    settings = _settings()
    asyncio.run(
        payments_module.refund(
            settings,
            console,
            payment_id=payment_id,
            amount=money,
            key=key or payments_module.new_key(),
        )
    )


@payments.command("cancel")
def payments_cancel(payment_id: str) -> None:
    """Cancel a payment the provider has not been asked about yet."""
    settings = _settings()
    asyncio.run(payments_module.cancel(settings, console, payment_id=payment_id))


@review.command("list")
def review_list(
    resolved: Annotated[bool, typer.Option(help="Resolved cases instead of open ones.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many.", min=1)] = 100,
) -> None:
    """Review cases, oldest first, with their age; OVERDUE past PAYSUITE_REVIEW_SLA_S."""
    settings = _settings()
    asyncio.run(review_module.list_cases(settings, console, resolved=resolved, limit=limit))


@review.command("show")
def review_show(case_id: str) -> None:
    """A review case with its evidence, its payment and the payment's audit trail."""
    settings = _settings()
    asyncio.run(review_module.show_case(settings, console, case_id))


@review.command("resolve")
def review_resolve(
    case_id: str,
    resolution: Annotated[
        review_module.ResolveAs,
        typer.Option("--as", help="What the payment is: completed, failed or refunded."),
    ],
    note: Annotated[str, typer.Option(help="Why: kept with the case and the payment.")],
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Who decides (default: your login name); with PAYSUITE_TOKEN, its subject.",
        ),
    ] = None,
) -> None:
    """Resolve a review case (once).

    A payment in review moves to the resolution (a deposit resolved as completed is credited
    first); a final or settled payment only records a resolution that agrees with its status.
    """
    settings = _settings()
    asyncio.run(
        review_module.resolve_case(
            settings,
            console,
            case_id,
            resolution=resolution,
            note=note,
            operator=by,
        )
    )


@events.command("tail")
def events_tail(
    stream: Annotated[str, typer.Argument(help="payment, wallet, gateway or a full stream name")],
    from_start: Annotated[bool, typer.Option(help="Replay the stream from its start.")] = False,
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
) -> None:
    """Print events from a Redis stream as they arrive."""
    settings = endpoints.locate(_settings())
    asyncio.run(
        inspect_module.tail_events(settings, console, stream, from_start=from_start, count=count)
    )


def run() -> None:
    """The `paysuite` command: expected failures end in one line and a non-zero exit code,
    never a traceback (a suite that is not running, a bad setting)."""
    try:
        app()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise SystemExit(2) from None
