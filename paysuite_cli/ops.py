"""Operator commands for the event pipeline.

`paysuite outbox status`: unpublished rows and the oldest one's age, per service database,
`stalled` (exit 1) when the oldest is older than the threshold.
`paysuite events pending`: per stream and consumer group, the lag and how long its oldest
undelivered entry has waited, the pending entries and the longest idle one, the dead-letter
stream's length, and Redis memory; `stalled` (exit 1) past the threshold.
Both read PostgreSQL and Redis themselves, never the processes' gauges: a process whose relay
died also stopped updating what it reports.
`paysuite events dlq list|replay|drop`: look at dead-lettered events, put them back on their
stream (same event_id, so consumers that already applied them skip them), or discard them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.config import ConfigError, Settings
from common.events import SUITE_STREAMS, dead_letter_stream, suite_stream_keys
from devstack.pipeline import (
    CONNECT_TIMEOUT_S,
    DeadLetter,
    OutboxStatus,
    RedisMemory,
    StreamStatus,
    dead_letters,
    outbox_status,
    pending_status,
    redis_memory,
    stream_lengths,
    stream_range,
)
from paysuite_cli.endpoints import locate

T = TypeVar("T")

PAGE = 100
# The relay logs an alarm past this stream length (its default `stream_alarm_length`): the
# stream is trimmed only below what every group acknowledged, so a long one means a group is
# far behind or gone.
STREAM_ALARM_LENGTH = 1_000_000

outbox_app = typer.Typer(help="The transactional outboxes of the service databases.")
dlq_app = typer.Typer(help="Dead-lettered events: list, replay onto their stream, or drop.")
console = Console()


class OpsError(Exception):
    """An expected failure: printed as one line, exit code 1."""


StalledOpt = Annotated[
    float | None,
    typer.Option(
        "--stalled-after",
        help="Seconds after which waiting work counts as stalled"
        " (default PAYSUITE_OUTBOX_STALLED_AFTER_S, 60).",
        min=0.0,
    ),
]


def register(app: typer.Typer, events: typer.Typer) -> None:
    app.add_typer(outbox_app, name="outbox", no_args_is_help=True)
    events.command("pending")(events_pending)
    events.add_typer(dlq_app, name="dlq", no_args_is_help=True)


# --- outbox status -----------------------------------------------------------------------


@outbox_app.command("status")
def outbox_status_command(stalled_after: StalledOpt = None) -> None:
    """Unpublished outbox rows and the oldest one's age, per service database (`stalled`,
    exit 1, past the threshold); then each stream's length, with an alarm when it nears the
    point where it would be trimmed."""
    settings = _settings(need_database=True)
    threshold = _threshold(settings, stalled_after)
    statuses = asyncio.run(outbox_status(settings))
    table = Table(title="outbox", title_justify="left")
    for column in ("database", "unpublished", "oldest unpublished", "state"):
        table.add_column(column, justify="right" if column != "database" else "left")
    for status in statuses:
        table.add_row(
            status.database,
            "" if status.unpublished is None else f"{status.unpublished:,}",
            _age(status.oldest_age_s),
            _outbox_state(status, threshold),
        )
    console.print(table)
    _print_stream_lengths(settings)
    if any(status.error or _outbox_stalled(status, threshold) for status in statuses):
        raise typer.Exit(1)


def _outbox_stalled(status: OutboxStatus, threshold: float) -> bool:
    return status.oldest_age_s is not None and status.oldest_age_s > threshold


def _outbox_state(status: OutboxStatus, threshold: float) -> str:
    if status.error:
        return f"[red]unreachable: {escape(status.error)}[/red]"
    if _outbox_stalled(status, threshold):
        return f"[red]stalled: unpublished for over {_age(threshold)}[/red]"
    return "ok"


def _threshold(settings: Settings, given: float | None) -> float:
    return float(settings.outbox_stalled_after_s if given is None else given)


def _print_stream_lengths(settings: Settings) -> None:
    try:
        settings = settings.model_copy(update={"redis_url": settings.require_redis_url()})
    except ConfigError:
        return  # no Redis configured here: the databases are what this command is about
    streams = suite_stream_keys(settings.stream_prefix)
    lengths = _with_redis(settings, lambda redis: stream_lengths(redis, streams))
    table = Table(title="streams", title_justify="left")
    for column in ("stream", "length", "state"):
        table.add_column(column, justify="right" if column == "length" else "left")
    for stream, length in lengths.items():
        alarm = length > STREAM_ALARM_LENGTH
        state = f"[red]ALARM: over {STREAM_ALARM_LENGTH:,} entries[/red]" if alarm else "ok"
        table.add_row(stream, f"{length:,}", state)
    console.print(table)


# --- events pending ----------------------------------------------------------------------


def events_pending(stalled_after: StalledOpt = None) -> None:
    """Per stream and consumer group: lag and its oldest entry's wait, pending entries and the
    longest idle, dead letters; then Redis memory. `stalled` (exit 1) past the threshold."""
    settings = _settings()
    threshold_ms = int(_threshold(settings, stalled_after) * 1000)
    streams = suite_stream_keys(settings.stream_prefix)

    async def read(redis: Redis) -> tuple[list[StreamStatus], RedisMemory]:
        return await pending_status(redis, streams), await redis_memory(redis)

    statuses, memory = _with_redis(settings, read)
    table = Table(title="consumer groups", title_justify="left")
    columns = (
        "stream", "length", "group", "consumers", "lag", "oldest waiting", "pending",
        "oldest idle", "DLQ", "state",
    )  # fmt: skip
    for column in columns:
        left = column in ("stream", "group", "state")
        table.add_column(column, justify="left" if left else "right")
    for status in statuses:
        dlq = f"[red]{status.dead_letters:,}[/red]" if status.dead_letters else "0"
        length = f"{status.length:,}"
        if not status.groups:
            table.add_row(status.stream, length, "(no group)", *[""] * 6, dlq, "")
        for group in status.groups:
            table.add_row(
                status.stream,
                length,
                group.group,
                str(group.consumers),
                f"≥ {group.lag:,}" if group.lag_capped else f"{group.lag:,}",
                _age_ms(group.oldest_waiting_ms),
                f"{group.pending:,}",
                _age_ms(group.oldest_idle_ms),
                dlq,
                "[red]stalled[/red]" if group.stalled(threshold_ms) else "ok",
            )
    console.print(table)
    console.print(memory.describe())
    if any(group.stalled(threshold_ms) for status in statuses for group in status.groups):
        raise typer.Exit(1)


# --- events dlq --------------------------------------------------------------------------


def resolve_stream(settings: Settings, stream: str) -> str:
    """`payment`, `paysuite.payment.events` or its `.dlq`, with or without the configured
    stream prefix: the source stream's full name."""
    name = SUITE_STREAMS.get(stream, stream).removesuffix(dead_letter_stream(""))
    prefix = settings.stream_prefix
    return name if prefix and name.startswith(prefix) else prefix + name


async def replay(redis: Redis, stream: str, entry_id: str | None) -> int:
    """Re-adds dead letters to their source stream and removes them from the DLQ, each in one
    MULTI, so a crash never loses one and never replays one twice. None: every one present
    now (not the ones a still-failing consumer parks again meanwhile)."""
    return await _each(redis, stream, entry_id, lambda letter: _replay_one(redis, stream, letter))


async def drop(redis: Redis, stream: str, entry_id: str | None) -> int:
    dlq = dead_letter_stream(stream)
    return await _each(redis, stream, entry_id, lambda letter: redis.xdel(dlq, letter.entry_id))


async def _replay_one(redis: Redis, stream: str, letter: DeadLetter) -> None:
    target = letter.field("source_stream") or stream
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(target, letter.original)  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
        pipe.xdel(dead_letter_stream(stream), letter.entry_id)
        await pipe.execute()


async def _each(
    redis: Redis, stream: str, entry_id: str | None, action: Callable[[DeadLetter], Awaitable[Any]]
) -> int:
    dlq = dead_letter_stream(stream)
    if entry_id is not None:
        found = await stream_range(redis, dlq, low=entry_id, high=entry_id, count=1)
        if not found:
            raise OpsError(f"no entry {entry_id} in {dlq}")
        await action(found[0])
        return 1
    newest = await stream_range(redis, dlq, reverse=True, count=1)
    if not newest:
        return 0
    done = 0
    while page := await stream_range(redis, dlq, high=newest[0].entry_id, count=PAGE):
        for letter in page:
            await action(letter)
            done += 1
    return done


StreamArg = Annotated[
    str, typer.Argument(help="payment, saga, wallet, gateway or a full stream name")
]
EntryArg = Annotated[str | None, typer.Argument(help="The DLQ entry id (see `dlq list`).")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every entry in the DLQ.")]


@dlq_app.command("list")
def dlq_list(
    stream: StreamArg,
    limit: Annotated[int, typer.Option(help="Show at most this many, oldest first.", min=1)] = 20,
) -> None:
    """Dead-lettered events of a stream, oldest first."""
    settings = _settings()
    name = resolve_stream(settings, stream)
    letters = _with_redis(settings, lambda redis: dead_letters(redis, name, limit=limit))
    table = Table(title=dead_letter_stream(name), title_justify="left")
    for column in ("entry", "group", "event type", "event id", "source entry", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            letter.entry_id,
            letter.field("group"),
            letter.field("event_type"),
            letter.field("event_id"),
            letter.field("source_id"),
            escape(letter.field("error")[:200]),
        )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(stream: StreamArg, entry_id: EntryArg = None, all_: AllOpt = False) -> None:
    """Put dead letters back on their stream, keeping their event_id.

    Every group on the stream sees a replayed event again; those that applied it already skip
    it by its event_id.
    """
    _dlq_action(stream, entry_id, all_, replay, "replayed")


@dlq_app.command("drop")
def dlq_drop(stream: StreamArg, entry_id: EntryArg = None, all_: AllOpt = False) -> None:
    """Delete dead letters for good."""
    _dlq_action(stream, entry_id, all_, drop, "dropped")


def _dlq_action(
    stream: str,
    entry_id: str | None,
    all_: bool,
    action: Callable[[Redis, str, str | None], Awaitable[int]],
    verb: str,
) -> None:
    if (entry_id is None) == (not all_):
        console.print("[red]give either an ENTRY_ID or --all[/red]")
        raise typer.Exit(2)
    settings = _settings()
    name = resolve_stream(settings, stream)
    count = _with_redis(settings, lambda redis: action(redis, name, entry_id))
    console.print(f"{verb} {count} dead letter{'s' if count != 1 else ''} of {name}")


# --- plumbing ----------------------------------------------------------------------------


def _settings(*, need_database: bool = False) -> Settings:
    settings = locate()
    if need_database:
        return settings.model_copy(update={"database_url": settings.require_database_url()})
    return settings.model_copy(update={"redis_url": settings.require_redis_url()})


def _with_redis(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
    async def run() -> T:
        redis = Redis.from_url(
            settings.require_redis_url(),
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S * 2,
        )
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except OpsError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None


def _age_ms(ms: int | None) -> str:
    return _age(ms / 1000 if ms is not None else None)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"
