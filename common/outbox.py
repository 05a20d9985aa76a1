"""The transactional outbox: written in the business transaction, published by the relay.

Relay contract (safe with any number of replicas, against every service database):
- rows are split into `PARTITIONS` by a hash of their aggregate id; a relay publishes a
  partition only while it holds that partition's transaction-scoped advisory lock, so at
  most one relay at a time publishes each aggregate's events, and it publishes them in id
  order. Rows of one aggregate are inserted in version order (each change waits for the
  previous one's commit), so id order is per-aggregate order on the stream;
- it reads unpublished rows (never "id > last seen"), so a row whose transaction commits
  late is published later instead of being skipped;
- it XADDs a batch to Redis and marks it published in the same database transaction; a crash
  between the two republishes the batch with the same event ids, which consumers deduplicate
  (at-least-once delivery, exactly-once effect);
- it wakes as soon as a unit of work of its own process commits outbox rows, and polls
  (every `poll_interval_s`) for rows written by other processes. Not LISTEN/NOTIFY: a NOTIFY
  takes a cluster-wide lock from pre-commit to the end of the commit, which serialised every
  business transaction (measured on the embedded server with 16 writers: 5,310 commits/s
  plain, 1,179 with a NOTIFY each);
- a Redis that restarted (a new `run_id`) may have lost the last second of entries it had
  acknowledged (appendfsync everysec, or no persistence at all): the relay publishes again
  every row it published within `REPUBLISH_WINDOW_S` before it noticed, with the same event
  ids, which consumers deduplicate; nothing then waits for a sweep to find a lost event;
- housekeeping: published rows are purged after `retention` (the outbox table is the
  events' history), and each stream is trimmed (XTRIM MINID) only below what every consumer
  group has acknowledged and older than the stream retention, so an unread entry is never
  dropped. A stream no group reads is left alone (its consumer's group may not exist yet),
  unless the service names it `broadcast`: read by plain XREAD (the public payment stream:
  the watch feed, outside subscribers), it keeps the stream retention alone, as a log's
  readers expect, until a group appears on it. Trimming runs every fifth of the stream
  retention (1 s to 60 s), so Redis holds about one retention's worth of events: its memory
  is bounded by the event rate, not by how long the suite has run. A stream that grows past
  `stream_alarm_length` is logged as an alarm (and shown by `paysuite outbox status`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta

import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common import tracing
from common.aio import wait_any
from common.db import RawConnection, database_boundary, driver_connection, raw_transaction
from common.errors import DependencyUnavailable
from common.events import OutgoingEvent
from common.streams import redis_boundary
from common.supervision import beat

log = structlog.get_logger(__name__)

PARTITIONS = 16
PURGE_BATCH = 10_000
PURGE_BATCHES_PER_ROUND = 50
CONTENDED_RETRY_S = 0.02
# First key of the relay's advisory locks (the second is the partition): "outb".
LOCK_NAMESPACE = 0x6F757462

_INSERT = (
    "INSERT INTO outbox (event_id, stream, event_type, aggregate_type, aggregate_id,"
    " aggregate_version, envelope) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
# Many rows (a group commit's events) in one statement of constant text, so it stays
# prepared; in the given order, which is each aggregate's order. The rows go as one JSON
# document (envelopes in base64), not as seven arrays: psycopg dumps each array parameter in
# Python (a dumper looked up per array, each element packed), about 28 us an array on this
# machine, where the C JSON encoder and base64 take a few microseconds for the lot.
_INSERT_MANY = (
    "INSERT INTO outbox (event_id, stream, event_type, aggregate_type, aggregate_id,"
    " aggregate_version, envelope) SELECT e.event_id, e.stream, e.event_type, e.aggregate_type,"
    " e.aggregate_id, e.aggregate_version, decode(e.envelope, 'base64')"
    " FROM jsonb_to_recordset(%s::jsonb) AS e(event_id uuid, stream text, event_type text,"
    " aggregate_type text, aggregate_id text, aggregate_version bigint, envelope text,"
    " position integer) ORDER BY e.position"
)
_json = json.JSONEncoder().encode
# One statement per batch: lock the partitions no other relay holds (advisory locks, held to
# the end of the transaction), take the oldest unpublished rows of those partitions in id
# order and mark them published. The marks commit only after the rows reached Redis: a failed
# publish rolls them back. The first column is how many partitions this relay holds (the
# one row of NULLs beside it when nothing was claimed).
_CLAIM = (
    "WITH parts AS MATERIALIZED (SELECT part FROM ("
    " SELECT CAST((s + %(offset)s) %% %(n)s AS integer) AS part"
    " FROM generate_series(0, CAST(%(n)s AS integer) - 1) AS s) AS candidates"
    " WHERE pg_try_advisory_xact_lock(CAST(%(ns)s AS integer), part)),"
    " claimed AS MATERIALIZED (SELECT id FROM outbox WHERE published_at IS NULL"
    " AND (hashtext(aggregate_id) & 2147483647) %% CAST(%(n)s AS integer)"
    " = ANY(ARRAY(SELECT part FROM parts))"
    " ORDER BY id LIMIT %(limit)s FOR UPDATE),"
    " marked AS (UPDATE outbox AS o SET published_at = now() FROM claimed"
    " WHERE o.id = claimed.id RETURNING o.id, o.stream, o.event_id, o.event_type,"
    " o.aggregate_id, o.aggregate_version, o.envelope)"
    " SELECT CAST((SELECT count(*) FROM parts) AS integer), marked.*"
    " FROM (SELECT 1) AS one LEFT JOIN marked ON true ORDER BY marked.id"
)
# Rows are published in about id order, so the recent ones are among the newest ids: a
# bounded backward walk of the primary key instead of a scan of a day of published rows.
_UNPUBLISH_RECENT = (
    "UPDATE outbox SET published_at = NULL WHERE id IN (SELECT id FROM"
    " (SELECT id, published_at FROM outbox ORDER BY id DESC LIMIT %(scan)s) AS newest"
    " WHERE published_at > now() - make_interval(secs => %(window)s))"
)
REPUBLISH_WINDOW_S = 20.0
REPUBLISH_SCAN = 200_000
# Both read the partial index of unpublished rows; the count stops at BACKLOG_COUNT_LIMIT so
# a huge backlog cannot make the sample itself slow.
_BACKLOG = (
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL"
    " LIMIT %(limit)s) AS unpublished),"
    " (SELECT extract(epoch FROM now() - created_at) FROM outbox"
    " WHERE published_at IS NULL ORDER BY id LIMIT 1)"
)
BACKLOG_COUNT_LIMIT = 1_000_000
_OLDEST_UNPUBLISHED = (
    "SELECT id, extract(epoch FROM now() - created_at)::float8 FROM outbox"
    " WHERE published_at IS NULL ORDER BY id LIMIT 1"
)
_PURGE = text(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
    " WHERE published_at < now() - :retention LIMIT :limit)"
)


PUBLISHED = Counter("outbox_published_total", "Outbox rows this process published to streams.")
# Each claim is a transaction of three statements (BEGIN, the claim, COMMIT), whatever it
# finds: outbox_published_total over the claims that published is the relay's batch size.
CLAIMS = Counter(
    "outbox_claims_total",
    "Claims of unpublished outbox rows by this process's relay, by whether any were found.",
    ["outcome"],
)
_CLAIMED = CLAIMS.labels("published")
_FOUND_NONE = CLAIMS.labels("empty")
BACKLOG = Gauge(
    "outbox_backlog", "Unpublished outbox rows, sampled by the relay (counted up to a million)."
)
OLDEST_AGE = Gauge(
    "outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none), sampled by the relay.",
)
STREAM_LENGTH = Gauge(
    "stream_length",
    "Entries in a stream this relay publishes to, sampled by the relay.",
    ["stream"],
)
REDIS_MEMORY = Gauge("redis_used_memory_bytes", "Redis used_memory, sampled by the relay.")
REDIS_MAXMEMORY = Gauge(
    "redis_maxmemory_bytes", "Redis maxmemory (0: unlimited), sampled by the relay."
)
# Sampled on this period, not per batch: the relay's own hot path stays two statements.
SAMPLE_EVERY_S = 5.0
MIN_TRIM_EVERY_S = 1.0

# The relays running in this process, by the id of the engine they publish from.
_RELAY_WAKERS: dict[int, set[asyncio.Event]] = {}


def outbox_committed(engine: AsyncEngine) -> None:
    """Called after a commit that wrote outbox rows: wakes this process's relay for them."""
    for wake in _RELAY_WAKERS.get(id(engine), ()):
        wake.set()


async def write_outbox(
    conn: AsyncConnection | RawConnection, events: Sequence[OutgoingEvent]
) -> None:
    """Adds events to the outbox inside the caller's open transaction (plain SQL on the driver
    connection: it runs in every business transaction)."""
    if not events:
        return
    raw = await driver_connection(conn)
    if len(events) == 1:
        (event,) = events
        envelope = event.envelope
        await raw.execute(
            _INSERT,
            (
                envelope.event_id,
                event.stream,
                envelope.event_type,
                envelope.aggregate_type,
                envelope.aggregate_id,
                envelope.aggregate_version,
                envelope.SerializeToString(),
            ),
        )
        return
    await raw.execute(_INSERT_MANY, (outbox_document(events),))


def outbox_document(events: Sequence[OutgoingEvent]) -> str:
    """Outbox rows as the one JSON document `_INSERT_MANY` and `outbox_cte` take."""
    return _json(
        [
            {
                "event_id": e.envelope.event_id,
                "stream": e.stream,
                "event_type": e.envelope.event_type,
                "aggregate_type": e.envelope.aggregate_type,
                "aggregate_id": e.envelope.aggregate_id,
                "aggregate_version": e.envelope.aggregate_version,
                "envelope": base64.b64encode(e.envelope.SerializeToString()).decode("ascii"),
                "position": position,
            }
            for position, e in enumerate(events)
        ]
    )


def outbox_cte(aggregate_ids: str, *, document: str = "%(outbox)s") -> str:
    """A CTE (`outboxed`) writing the rows of `document` (the placeholder of an
    `outbox_document`; `%s` in a statement of positional parameters) whose aggregate id is
    among `aggregate_ids` (SQL yielding text ids), in the document's order: the outbox part
    of a unit of work's write, which writes only the events of the aggregates that statement
    did write (`SqlUnitOfWork.autocommit`, `SqlUnitOfWork.take_outgoing`)."""
    return (
        "outboxed AS (INSERT INTO outbox (event_id, stream, event_type, aggregate_type,"  # noqa: S608 - constant SQL pieces, no input
        " aggregate_id, aggregate_version, envelope) SELECT e.event_id, e.stream, e.event_type,"
        " e.aggregate_type, e.aggregate_id, e.aggregate_version, decode(e.envelope, 'base64')"
        f" FROM jsonb_to_recordset({document}::jsonb) AS e(event_id uuid, stream text,"
        " event_type text, aggregate_type text, aggregate_id text, aggregate_version bigint,"
        " envelope text, position integer)"
        f" WHERE e.aggregate_id IN ({aggregate_ids}) ORDER BY e.position)"
    )


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        stream_prefix: str = "",
        retention: timedelta = timedelta(hours=24),
        stream_retention: timedelta = timedelta(hours=24),
        stream_alarm_length: int = 1_000_000,
        housekeeping_interval_s: float = 60.0,
        linger_s: float = 0.0,
        broadcast: Collection[str] = (),
    ) -> None:
        self._stream_prefix = stream_prefix
        self._broadcast = frozenset(stream_prefix + stream for stream in broadcast)
        self._linger_s = linger_s
        self._engine = engine
        self._redis = redis
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._retention = retention
        self._stream_retention = stream_retention
        self._stream_alarm_length = stream_alarm_length
        self._housekeeping_interval_s = housekeeping_interval_s
        self._trim_every_s = min(
            max(stream_retention.total_seconds() / 5, MIN_TRIM_EVERY_S), housekeeping_interval_s
        )
        self._next_housekeeping = 0.0
        self._next_trim = 0.0
        self._next_sample = 0.0
        self._redis_run_id: str | None = None
        self._streams: set[str] = set()
        self._wake = asyncio.Event()
        # Another relay held some partitions at the last look: look again soon, since rows
        # this process committed may sit in them.
        self._contended = False

    async def publish_batch(self) -> int:
        """Publishes up to one batch of the partitions it can lock; returns how many."""
        async with database_boundary("outbox relay"), raw_transaction(self._engine) as raw:
            offset = random.randrange(PARTITIONS)  # noqa: S311 - spreads replicas, not a secret
            cursor = await raw.execute(
                _CLAIM,
                {
                    "n": PARTITIONS,
                    "ns": LOCK_NAMESPACE,
                    "offset": offset,
                    "limit": self._batch_size,
                },
            )
            claimed = await cursor.fetchall()
            self._contended = not claimed or claimed[0][0] < PARTITIONS
            rows = [row[1:] for row in claimed if row[1] is not None]
            if not rows:
                _FOUND_NONE.inc()
                return 0
            _CLAIMED.inc()
            pipe = self._redis.pipeline(transaction=False)
            for _id, stream, event_id, event_type, aggregate_id, version, envelope in rows:
                stream = self._stream_prefix + stream
                self._streams.add(stream)
                pipe.xadd(
                    stream,
                    {
                        "event_id": str(event_id),
                        "event_type": event_type,
                        "aggregate_id": aggregate_id,
                        "aggregate_version": str(version),
                        "envelope": bytes(envelope),
                    },
                )
            with tracing.tracer().start_as_current_span(
                "outbox publish",
                kind=tracing.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "redis",
                    "messaging.batch.message_count": len(rows),
                },
            ):
                async with redis_boundary("outbox publish"):
                    await pipe.execute()
        PUBLISHED.inc(len(rows))
        log.debug("outbox.published", count=len(rows))
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        wakers = _RELAY_WAKERS.setdefault(id(self._engine), set())
        wakers.add(self._wake)
        try:
            while not stop.is_set():
                beat()
                self._wake.clear()
                try:
                    while await self.publish_batch() == self._batch_size:
                        beat()  # a long backlog is progress, batch after batch
                    await self._housekeeping_when_due()
                    await self._trim_when_due()
                    await self._sample_when_due()
                except DependencyUnavailable as exc:
                    # The rows stay unpublished and are retried when the server is back; the
                    # first round that reaches it looks at once whether Redis restarted.
                    log.warning("outbox.publish_failed", error=str(exc))
                    self._next_sample = 0.0
                wait = CONTENDED_RETRY_S if self._contended else self._poll_interval_s
                await wait_any(stop, self._wake, at_most_s=wait)
                if self._wake.is_set() and self._linger_s > 0:
                    # Woken by a commit: the commits of the next few milliseconds go in the
                    # same claim. Each claim is a transaction (BEGIN, claim, COMMIT) however
                    # few rows it finds; woken at once, the relays made 0.72 claims per
                    # deposit of 4 events, and 0.56 with 5 ms of linger.
                    await wait_any(stop, at_most_s=self._linger_s)
        finally:
            wakers.discard(self._wake)

    async def _sample_when_due(self) -> None:
        if time.monotonic() < self._next_sample:
            return
        self._next_sample = time.monotonic() + SAMPLE_EVERY_S
        await self.sample_backlog()
        await self.sample_streams()

    async def sample_streams(self) -> None:
        """Sets the stream-length and Redis memory gauges: one round trip."""
        streams = sorted(self._streams)
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        pipe.info("memory")
        pipe.info("server")
        async with redis_boundary("stream sample"):
            *lengths, memory, server = await pipe.execute()
        for stream, length in zip(streams, lengths, strict=True):
            STREAM_LENGTH.labels(stream).set(int(length or 0))
        REDIS_MEMORY.set(int((memory or {}).get("used_memory") or 0))
        REDIS_MAXMEMORY.set(int((memory or {}).get("maxmemory") or 0))
        await self._notice_restart(str((server or {}).get("run_id") or ""))

    async def _notice_restart(self, run_id: str) -> None:
        previous, self._redis_run_id = self._redis_run_id, run_id or self._redis_run_id
        if previous and run_id and run_id != previous:
            republished = await self.republish_recent()
            log.warning("outbox.redis_restarted", republishing=republished)

    async def republish_recent(self, window_s: float = REPUBLISH_WINDOW_S) -> int:
        """Marks the rows published within `window_s` unpublished again; returns how many."""
        async with database_boundary("outbox republish"), self._engine.begin() as conn:
            raw = await driver_connection(conn)
            cursor = await raw.execute(
                _UNPUBLISH_RECENT, {"scan": REPUBLISH_SCAN, "window": window_s}
            )
        self._wake.set()
        return int(cursor.rowcount)

    async def sample_backlog(self) -> tuple[int, float]:
        """Sets the backlog gauges; returns (unpublished rows, oldest age in seconds)."""
        async with database_boundary("outbox sample"), self._engine.begin() as conn:
            raw = await driver_connection(conn)
            cursor = await raw.execute(_BACKLOG, {"limit": BACKLOG_COUNT_LIMIT})
            count, age = await cursor.fetchone() or (0, None)
        backlog, oldest = int(count), float(age or 0.0)
        BACKLOG.set(backlog)
        OLDEST_AGE.set(oldest)
        return backlog, oldest

    # -- housekeeping -------------------------------------------------------------------

    async def _housekeeping_when_due(self) -> None:
        if time.monotonic() < self._next_housekeeping:
            return
        self._next_housekeeping = time.monotonic() + self._housekeeping_interval_s
        # In batches of PURGE_BATCH, each its own short transaction, until the backlog is gone
        # (a busy service publishes far more than one batch a minute) or a bounded number ran.
        purged = 0
        for _ in range(PURGE_BATCHES_PER_ROUND):
            batch = await self.purge_published(limit=PURGE_BATCH)
            purged += batch
            if batch < PURGE_BATCH:
                break
        if purged:
            log.info("outbox.purged", count=purged)

    async def _trim_when_due(self) -> None:
        if time.monotonic() < self._next_trim:
            return
        self._next_trim = time.monotonic() + self._trim_every_s
        for stream in sorted(self._streams):
            await self.trim_stream(stream)

    async def purge_published(self, *, limit: int = 10_000) -> int:
        """Deletes published rows older than the retention; returns how many."""
        async with database_boundary("outbox purge"), self._engine.begin() as conn:
            result = await conn.execute(_PURGE, {"retention": self._retention, "limit": limit})
        return int(result.rowcount)

    async def trim_stream(self, stream: str) -> int:
        """Trims entries every group has acknowledged and that are older than the stream
        retention; returns how many were removed. A stream without groups is left alone,
        unless it is `broadcast`: then what is older than the retention goes."""
        async with redis_boundary("stream trim"):
            floor = await acknowledged_floor(self._redis, stream)
            length = int(await self._redis.xlen(stream))
            if length > self._stream_alarm_length:
                log.error("outbox.stream_too_long", stream=stream, length=length)
            if floor is None and stream not in self._broadcast:
                return 0
            oldest_kept_ms = int(time.time() * 1000 - self._stream_retention.total_seconds() * 1000)
            kept: EntryId = (max(oldest_kept_ms, 0), 0)
            minid = kept if floor is None else min(floor, kept)
            trimmed = await self._redis.xtrim(
                stream, minid=f"{minid[0]}-{minid[1]}", approximate=False
            )
            return int(trimmed)


EntryId = tuple[int, int]
_NOTHING_DELIVERED: EntryId = (0, 0)


class OutboxProgress:
    """Whether this database's outbox is moving, read from PostgreSQL itself (not from the
    relay's own gauges, which froze with it): the same row oldest-unpublished, and older than
    `stalled_after_s`, across checks spanning that long, means no relay publishes it. Called
    by the readiness probe only while PostgreSQL and Redis answer, so an outage is reported
    as the outage it is, not as a stall."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        stalled_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._stalled_after_s = stalled_after_s
        self._clock = clock
        self._oldest: int | None = None
        self._since = 0.0

    def reset(self) -> None:
        """Forget what was seen: the relay gets the whole threshold again after an outage."""
        self._oldest = None

    async def problem(self) -> str | None:
        async with database_boundary("outbox progress"), self._engine.connect() as conn:
            raw = await driver_connection(conn)
            row = await (await raw.execute(_OLDEST_UNPUBLISHED)).fetchone()
            await conn.commit()  # a read-only unit ends in COMMIT: prepared statements stay
        if row is None:
            self._oldest = None
            return None
        row_id, age = int(row[0]), float(row[1] or 0.0)
        if row_id != self._oldest:
            self._oldest, self._since = row_id, self._clock()
            return None
        waited = self._clock() - self._since
        if waited < self._stalled_after_s or age < self._stalled_after_s:
            return None
        return f"outbox stalled: row {row_id} unpublished for {age:.0f} s"


def _entry_id(value: bytes | str | None) -> EntryId | None:
    """An entry id as a comparable pair; None for an absent or unreadable one."""
    if value is None:
        return None
    raw = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = raw.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


async def acknowledged_floor(redis: Redis, stream: str) -> EntryId | None:
    """The lowest entry id some consumer group may still need, or None when no group reads
    the stream (or it does not exist).

    For each group that is its oldest pending entry or, with nothing pending, the last entry
    it was given (kept, harmlessly, so the floor never passes an unread entry). The two reads
    are not atomic: consumers acknowledge in between, so XPENDING may answer `min=None` for a
    group XINFO called busy; the last delivered id is then the floor. Anything unreadable
    in a reply counts as "nothing delivered", which trims nothing rather than too much.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key: the stream is gone, so there is nothing to trim
        return None
    if not groups:
        return None
    floors = []
    for group in groups:
        floor = _entry_id(group.get("last-delivered-id")) or _NOTHING_DELIVERED
        if int(group.get("pending") or 0):
            summary = await redis.xpending(stream, group["name"])
            oldest = _entry_id((summary or {}).get("min"))
            if oldest is not None:
                floor = min(floor, oldest)
        floors.append(floor)
    return min(floors)
