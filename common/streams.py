"""Redis Streams consumer groups with at-least-once delivery and exactly-once effects.

A handler does its effect and records the event id (see `mark_processed`) in ONE database
transaction, then the consumer acknowledges. Redelivery after a crash is therefore harmless.

Throughput and order:
- entries of different aggregates are handled concurrently, up to `concurrency` at once;
  entries of one aggregate run one after another in stream order (each waits for the one
  before it, and is left pending if that one did not succeed, so order survives a retry);
- reading stops while `concurrency` entries are in flight (back-pressure), and acknowledgements
  are sent in batches, together with the cleanup of their failure counters;
- this consumer's own failed entries are re-read from its pending list after a backoff.

Restarts and dead consumers (the timing model is in the README, "Recovery after a crash"):
- a consumer is named after its replica (`PAYSUITE_REPLICA_NAME`), so a restarted replica has
  its predecessor's name and pending list: it reads that list from the start before anything
  new, and takes over at once what was in flight when the process died;
- a live consumer renews a heartbeat key (`<stream>.<group>.alive.<name>`, lifetime
  `claim_idle_ms`) every third of that; on a timer, another consumer claims entries idle
  `claim_idle_ms` or longer whose owner has no heartbeat (a replica gone for good, e.g. a
  replaced pod). A live consumer is never robbed, however long its handler takes, so the
  claim idle time can be a few seconds; idle times in XPENDING keep meaning "since delivery".

Failures:
- an entry that cannot be parsed is parked on `<stream>.dlq` at once;
- a handler failure is counted in a Redis hash (not Redis' delivery counter, which also
  counts redeliveries during outages); at `max_deliveries` the entry is parked, so one poison
  message cannot block a stream;
- DependencyUnavailable (a database, Redis or peer is down) and ConcurrentUpdate are "wait
  and retry": never counted, never dead-lettered, however long the outage lasts. The
  consumer backs off while they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
import structlog
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.typing import StreamIdT
from sqlalchemy.ext.asyncio import AsyncConnection

from common import tracing
from common.aio import wait_any
from common.db import RawConnection, driver_connection
from common.errors import ConcurrentUpdate, DependencyUnavailable
from common.events import dead_letter_stream
from common.logging import bound_flow
from common.metrics import CALL_BUCKETS
from common.supervision import beat
from paysuite.events.v1 import events_pb2

log = structlog.get_logger(__name__)

Handler = Callable[[events_pb2.EventEnvelope], Awaitable[None]]
Entry = tuple[bytes, dict[bytes, bytes]]

_MARK_PROCESSED = (
    "INSERT INTO processed_events (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)
# Worth waiting for rather than counting against the entry.
_RETRY_LATER = (DependencyUnavailable, ConcurrentUpdate)
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
MIN_BACKOFF_S = 0.1
# A dependency back from an outage is tried again within this (README, "Recovery after a
# crash"); a round of retries that fails fast costs little, so it can be short.
MAX_BACKOFF_S = 2.0

HANDLED = Counter(
    "stream_events_handled_total",
    "Stream entries this consumer finished with, by result: ok, retry (left pending to be"
    " tried again), dead_lettered, or skipped (a type its handler does not act on).",
    ["stream", "group", "result"],
)
HANDLING_SECONDS = Histogram(
    "stream_event_handling_seconds",
    "Time the handler took for one entry, whatever its result.",
    ["stream", "group"],
    buckets=CALL_BUCKETS,
)
PENDING = Gauge(
    "stream_pending",
    "Entries delivered to the group and not yet acknowledged, sampled on the reclaim timer.",
    ["stream", "group"],
)
LAG = Gauge(
    "stream_lag",
    "Entries not yet delivered to the group, sampled on the reclaim timer (Redis 7 and later"
    " report it; absent on Redis 6).",
    ["stream", "group"],
)
DEAD_LETTERS = Gauge(
    "stream_dead_letter_length",
    "Entries parked on the stream's dead-letter stream, sampled on the reclaim timer.",
    ["stream"],
)


# The ids go as a binary array (`%b`), which psycopg writes without quoting each in Python.
_MARK_MANY_PROCESSED = (
    "INSERT INTO processed_events (consumer, event_id) SELECT %s, unnest(%b::uuid[])"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


async def mark_many_processed(
    conn: AsyncConnection | RawConnection, consumer: str, event_ids: Sequence[str]
) -> set[str]:
    """`mark_processed` for many events in one statement; returns those processed now for the
    first time (the caller applies the effects of these only)."""
    raw = await driver_connection(conn)
    cursor = await raw.execute(_MARK_MANY_PROCESSED, (consumer, list(event_ids)))
    return {str(row[0]) for row in await cursor.fetchall()}


async def mark_processed(
    conn: AsyncConnection | RawConnection, consumer: str, event_id: str
) -> bool:
    """Records the event as processed in the caller's transaction.

    Returns False when it was processed before: the caller must then skip its effect.
    """
    raw = await driver_connection(conn)
    cursor = await raw.execute(_MARK_PROCESSED, (consumer, event_id))
    return bool(cursor.rowcount)


def consumer_name() -> str:
    """The name of a consumer whose replica has no name of its own: not kept by a restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


def heartbeat_key(stream: str, group: str, consumer: str) -> str:
    """Exists while the consumer is alive (see `StreamConsumer.keep_alive`)."""
    return f"{stream}.{group}.alive.{consumer}"


@contextlib.asynccontextmanager
async def redis_boundary(what: str) -> AsyncIterator[None]:
    """Redis being unreachable is an outage, not a bug: translated once, here. So is a Redis
    at its `maxmemory` refusing writes (noeviction): it accepts them again once the relays'
    trimming, or an operator, has made room, and until then every writer waits."""
    try:
        yield
    except _REDIS_DOWN as exc:
        raise DependencyUnavailable(f"redis unavailable during {what}: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if not str(exc).startswith("OOM"):
            raise
        raise DependencyUnavailable(f"redis is full (maxmemory) during {what}: {exc}") from exc


@dataclass
class _Outcome:
    """What a batch of handled entries leaves to do on Redis, done in one round trip."""

    ack: list[bytes] = field(default_factory=list)
    park: list[tuple[bytes, dict[bytes, bytes], str]] = field(default_factory=list)


class StreamConsumer:
    def __init__(
        self,
        redis: Redis,
        *,
        stream: str,
        group: str,
        handler: Handler,
        block_ms: int = 1000,
        claim_idle_ms: int = 5_000,
        max_deliveries: int = 10,
        batch_size: int = 100,
        concurrency: int = 32,
        name: str | None = None,
        handles: Callable[[str], bool] | None = None,
    ) -> None:
        self._redis = redis
        # Entries of a type the handler would only ignore are acknowledged unread: no decode,
        # span or task each (a group sees its whole stream; most of it may not concern it).
        self._handles = handles
        self.stream = stream
        self.group = group
        self._handler = handler
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._batch_size = batch_size
        self._concurrency = concurrency
        self.name = name or consumer_name()
        self._failures_key = f"{stream}.{group}.failures"
        # aggregate id -> the task handling its latest entry; a newer entry waits for it.
        self._tails: dict[str, asyncio.Task[bool]] = {}
        self._in_flight: set[bytes] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._outcome = _Outcome()
        self._flush_wanted = asyncio.Event()
        # Reclaiming from dead consumers runs on a timer; re-reading our own failed entries
        # after a backoff that grows while failures continue.
        self._claim_every_s = max(claim_idle_ms / 2000, 0.001)
        self._heartbeat_every_s = max(claim_idle_ms / 3000, 0.001)
        self.heartbeat_key = heartbeat_key(stream, group, self.name)
        self._next_claim = 0.0
        self._claim_cursor = "-"
        self._retry_own_at: float | None = None
        # Where reading our own pending list goes on; "0" from its start. It starts there: a
        # restarted replica first takes over what its predecessor left in flight.
        self._own_cursor: str | None = "0"
        self._backoff_s = MIN_BACKOFF_S
        self._ok = HANDLED.labels(stream, group, "ok")
        self._retried = HANDLED.labels(stream, group, "retry")
        self._dead_lettered = HANDLED.labels(stream, group, "dead_lettered")
        self._skipped = HANDLED.labels(stream, group, "skipped")
        self._handling = HANDLING_SECONDS.labels(stream, group)
        self._pending = PENDING.labels(stream, group)
        self._lag = LAG.labels(stream, group)
        self._dead_letters = DEAD_LETTERS.labels(stream)

    async def ensure_group(self) -> None:
        # From the start of the stream: a group created after events were published still
        # sees them; deduplication makes reprocessing harmless.
        async with redis_boundary("XGROUP CREATE"):
            try:
                await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # -- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until `stop`; anything unexpected propagates to the task supervisor, which
        logs, counts and restarts it (the flusher's failures too: see `_read_loop`)."""
        flusher = asyncio.create_task(self._flush_loop(stop), name=f"{self.group} acks")
        heart = asyncio.create_task(self._heartbeat_loop(stop), name=f"{self.group} heartbeat")
        try:
            while not stop.is_set():
                beat()
                try:
                    await self.ensure_group()
                    await self.keep_alive()  # before the first read: alive before owning anything
                    await self._read_loop(stop, flusher)
                except DependencyUnavailable as exc:
                    log.warning("stream.redis_unavailable", stream=self.stream, error=str(exc))
                    await wait_any(stop, at_most_s=1.0)
                except redis.exceptions.ResponseError as exc:
                    # NOGROUP after the stream was deleted: recreate the group and go on.
                    log.warning("stream.consume_failed", stream=self.stream, error=repr(exc))
                    await wait_any(stop, at_most_s=1.0)
        finally:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            await self._drain()
            if stop.is_set():
                # Woken, the flusher sends what is left and then sees the stop; cancelling it
                # inside a pipeline would leave a connection half-closed.
                self._flush_wanted.set()
            else:
                flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            with contextlib.suppress(DependencyUnavailable):
                await self._flush()
            if stop.is_set():
                # Stopped for good or for a restart: a replica of another name may claim what
                # is left once it is idle, without waiting for the heartbeat to lapse.
                with contextlib.suppress(DependencyUnavailable):
                    async with redis_boundary("DEL"):
                        await self._redis.delete(self.heartbeat_key)

    # -- liveness -------------------------------------------------------------------------

    async def keep_alive(self) -> None:
        """Says this consumer is alive for the next `claim_idle_ms`."""
        async with redis_boundary("SET"):
            await self._redis.set(self.heartbeat_key, int(time.time()), px=self._claim_idle_ms)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.keep_alive()
            except DependencyUnavailable as exc:
                log.warning("stream.heartbeat_failed", stream=self.stream, error=str(exc))
            except Exception:
                # Ending here would leave the consumer running unannounced, to be robbed of
                # its entries: said loudly, and tried again.
                log.exception("stream.heartbeat_failed", stream=self.stream)
            await wait_any(stop, at_most_s=self._heartbeat_every_s)

    async def _read_loop(self, stop: asyncio.Event, flusher: asyncio.Task[None]) -> None:
        while not stop.is_set():
            beat()
            if flusher.done() and not stop.is_set():
                # Acknowledgements stopped: raise what ended them, or entries would be
                # handled again and again without a word.
                flusher.result()
                raise RuntimeError("the acknowledgement loop ended")
            await self._room.wait()
            room = self._concurrency - len(self._in_flight)
            for entry in await self._fetch(min(room, self._batch_size)):
                self._dispatch(entry)

    async def poll_once(self) -> int:
        """Reads one batch (our own pending entries first, with no backoff; then a dead
        consumer's; then new ones), handles it to the end and acknowledges; returns its size."""
        self._own_cursor = self._own_cursor or "0"
        entries = await self._fetch(self._batch_size)
        tasks = [task for entry in entries if (task := self._dispatch(entry)) is not None]
        await asyncio.gather(*tasks)
        await self._flush()
        return len(entries)

    async def _drain(self) -> None:
        pending = list(self._tails.values())
        if pending:
            await asyncio.wait(pending, timeout=10)

    # -- fetching -------------------------------------------------------------------------

    async def _fetch(self, count: int) -> list[Entry]:
        now = time.monotonic()
        if self._retry_own_at is not None and now >= self._retry_own_at:
            self._retry_own_at = None
            self._own_cursor = "0"
        if self._own_cursor is not None:
            entries = await self._read_own(count)
            if entries:
                return entries
        if now >= self._next_claim and await self._claim_from_dead():
            entries = await self._read_own(count)
            if entries:
                return entries
        return await self._read(">", count, block=self._block_ms)

    async def _read_own(self, count: int) -> list[Entry]:
        """The next page of our own pending list (entries still being handled come back too,
        and are skipped by `_dispatch`); the cursor ends once a page comes back short."""
        assert self._own_cursor is not None
        entries = await self._read(self._own_cursor, count, block=None)
        self._own_cursor = as_text(entries[-1][0]) if len(entries) >= count > 0 else None
        return entries

    async def _read(self, start: str, count: int, *, block: int | None) -> list[Entry]:
        async with redis_boundary("XREADGROUP"):
            response: list[Any] = await self._redis.xreadgroup(  # type: ignore[assignment]  # redis-py annotates the reply as a loose union
                self.group, self.name, {self.stream: start}, count=count, block=block
            )
        entries: list[Entry] = []
        for _stream, stream_entries in response or ():
            entries.extend(_usable(stream_entries))
        return entries

    async def _claim_from_dead(self) -> int:
        """Moves entries idle `claim_idle_ms` or longer whose owner has no heartbeat into our
        own pending list, one page of the group's pending list per call; returns how many.
        Our own pending list is then read from its start, which delivers them."""
        page = self._batch_size
        async with redis_boundary("XPENDING"):
            pending = await self._redis.xpending_range(
                self.stream, self.group, self._claim_cursor, "+", page, idle=self._claim_idle_ms
            )
        owned = _owned(pending)
        if len(owned) < page:
            self._claim_cursor = "-"
            self._next_claim = time.monotonic() + self._claim_every_s
            await self.sample_depths()
        else:
            self._claim_cursor = _after(owned[-1][0])
        dead = await self._dead_owners({owner for _, owner in owned} - {self.name})
        ids: list[StreamIdT] = [entry_id for entry_id, owner in owned if owner in dead]
        if not ids:
            return 0
        # The min idle time makes the claim atomic against another claimer (or the owner's
        # own claim): an entry claimed since we listed it is idle no more and stays there.
        async with redis_boundary("XCLAIM"):
            claimed = await self._redis.xclaim(
                self.stream, self.group, self.name, self._claim_idle_ms, ids, justid=True
            )
        if claimed:
            log.info("stream.claimed", stream=self.stream, count=len(claimed), owners=sorted(dead))
            self._own_cursor = "0"
        return len(claimed or ())

    async def _dead_owners(self, owners: set[str]) -> set[str]:
        """The owners whose heartbeat key is gone."""
        if not owners:
            return set()
        ordered = sorted(owners)
        pipe = self._redis.pipeline(transaction=False)
        for owner in ordered:
            pipe.exists(heartbeat_key(self.stream, self.group, owner))
        async with redis_boundary("EXISTS"):
            alive = await pipe.execute()
        return {owner for owner, live in zip(ordered, alive, strict=True) if not live}

    async def sample_depths(self) -> None:
        """Sets the lag, pending and dead-letter gauges: one round trip per reclaim round."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        pipe.xlen(dead_letter_stream(self.stream))
        async with redis_boundary("XINFO GROUPS"):
            groups, parked = await pipe.execute()
        self._dead_letters.set(int(parked or 0))
        for info in groups or ():
            if as_text(info.get("name") or b"") == self.group:
                self._pending.set(int(info.get("pending") or 0))
                if info.get("lag") is not None:
                    self._lag.set(int(info["lag"]))

    # -- handling -------------------------------------------------------------------------

    def _dispatch(self, entry: Entry) -> asyncio.Task[bool] | None:
        entry_id, fields = entry
        if entry_id in self._in_flight:
            return None  # reclaimed from ourselves while still being handled
        if self._skips(fields):
            self._skipped.inc()
            self._outcome.ack.append(entry_id)  # not _done: a skip is no sign the outage is over
            self._flush_wanted.set()
            return None
        self._in_flight.add(entry_id)
        if len(self._in_flight) >= self._concurrency:
            self._room.clear()
        key = _aggregate_key(entry_id, fields)
        task = asyncio.create_task(self._run_after(self._tails.get(key), entry))
        self._tails[key] = task
        task.add_done_callback(lambda done: self._finished(key, entry_id, done))
        return task

    def _skips(self, fields: dict[bytes, bytes]) -> bool:
        """Whether the entry is of a type the handler does not act on (the relay writes the
        type beside the envelope; an entry without it is handled, to be safe)."""
        event_type = fields.get(b"event_type")
        return (
            self._handles is not None
            and event_type is not None
            and not self._handles(event_type.decode(errors="replace"))
        )

    def _finished(self, key: str, entry_id: bytes, task: asyncio.Task[bool]) -> None:
        self._in_flight.discard(entry_id)
        if self._tails.get(key) is task:
            del self._tails[key]
        if len(self._in_flight) < self._concurrency:
            self._room.set()

    async def _run_after(self, previous: asyncio.Task[bool] | None, entry: Entry) -> bool:
        """Handles `entry` once the entry before it of the same aggregate is done."""
        if previous is not None and not await previous:
            self._retry_soon(grow=False)
            return False  # stays pending behind its predecessor, and is retried with it
        entry_id, fields = entry
        if not fields:  # a reclaimed entry trimmed from the stream arrives without fields
            self._done(entry_id)
            return True
        return await self._handle(entry_id, fields)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> bool:
        try:
            envelope = events_pb2.EventEnvelope.FromString(fields[b"envelope"])
        except (KeyError, DecodeError):
            self._park(entry_id, fields, "unparseable envelope")
            return True
        started = time.perf_counter()
        with _handling_scope(self.stream, envelope) as span:
            try:
                await self._handler(envelope)
            except _RETRY_LATER as exc:
                self._handling.observe(time.perf_counter() - started)
                self._retried.inc()
                log.warning(
                    "stream.retry_later",
                    stream=self.stream,
                    event_id=envelope.event_id,
                    error=str(exc),
                )
                self._retry_soon(grow=True)
                return False
            except Exception as exc:
                self._handling.observe(time.perf_counter() - started)
                tracing.record_failure(span, exc)
                return await self._failed(entry_id, fields, envelope, exc)
            self._handling.observe(time.perf_counter() - started)
            self._ok.inc()
            # An access line at DEBUG, in the flow's trace and with its ids bound.
            log.debug("stream.handled", event_type=envelope.event_type, event_id=envelope.event_id)
            self._done(entry_id)
            return True

    async def _failed(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        envelope: events_pb2.EventEnvelope,
        exc: Exception,
    ) -> bool:
        bound = log.bind(stream=self.stream, event_id=envelope.event_id, type=envelope.event_type)
        try:
            async with redis_boundary("HINCRBY"):
                failures = int(await self._redis.hincrby(self._failures_key, entry_id.decode()))
        except DependencyUnavailable:
            self._retried.inc()
            self._retry_soon(grow=True)
            return False
        if failures >= self._max_deliveries:
            bound.error("stream.poison", failures=failures, error=repr(exc))
            self._park(entry_id, fields, repr(exc))
            return True
        bound.warning("stream.handler_failed", failures=failures, error=repr(exc))
        self._retried.inc()
        self._retry_soon(grow=True)
        return False

    def _retry_soon(self, *, grow: bool) -> None:
        """Re-reads our pending list after the backoff. It grows once per round of retries,
        not once per failed entry: sixteen entries failing together on one outage are one
        failure, not sixteen (which took the backoff from its floor to its cap at once)."""
        if self._retry_own_at is not None:
            return
        self._retry_own_at = time.monotonic() + self._backoff_s
        if grow:
            self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)

    def _done(self, entry_id: bytes) -> None:
        self._backoff_s = MIN_BACKOFF_S
        self._outcome.ack.append(entry_id)
        self._flush_wanted.set()

    def _park(self, entry_id: bytes, fields: dict[bytes, bytes], error: str) -> None:
        self._dead_lettered.inc()
        self._outcome.park.append((entry_id, fields, error))
        self._outcome.ack.append(entry_id)
        self._flush_wanted.set()

    # -- acknowledging --------------------------------------------------------------------

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._flush_wanted.wait()
            await asyncio.sleep(0.002)  # let the entries finishing right now join the batch
            try:
                await self._flush()
            except DependencyUnavailable as exc:
                log.warning("stream.ack_failed", stream=self.stream, error=str(exc))
                await wait_any(stop, at_most_s=1.0)

    async def _flush(self) -> None:
        outcome, self._outcome = self._outcome, _Outcome()
        self._flush_wanted.clear()
        if not outcome.ack:
            return
        pipe = self._redis.pipeline(transaction=False)
        dlq = dead_letter_stream(self.stream)
        for entry_id, fields, error in outcome.park:
            pipe.xadd(dlq, self._parked(entry_id, fields, error))  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
        pipe.xack(self.stream, self.group, *outcome.ack)
        pipe.hdel(self._failures_key, *(entry_id.decode() for entry_id in outcome.ack))
        try:
            async with redis_boundary("XACK"):
                await pipe.execute()
        except DependencyUnavailable:
            # Nothing acknowledged: put it back; the effects are deduplicated anyway.
            self._outcome.ack[:0] = outcome.ack
            self._outcome.park[:0] = outcome.park
            raise
        for entry_id, _fields, _error in outcome.park:
            log.error("stream.dead_lettered", stream=self.stream, entry_id=entry_id.decode())

    def _parked(
        self, entry_id: bytes, fields: dict[bytes, bytes], error: str
    ) -> dict[bytes, bytes]:
        parked = dict(fields)
        parked.update(
            {
                b"source_stream": self.stream.encode(),
                b"source_id": entry_id,
                b"group": self.group.encode(),
                b"error": error[:1000].encode(),
            }
        )
        return parked


@contextlib.contextmanager
def _handling_scope(stream: str, envelope: events_pb2.EventEnvelope) -> Iterator[tracing.Span]:
    """The event is handled in a span that continues the trace of the flow that caused it,
    with the flow's ids bound to every line logged meanwhile."""
    payment_id = envelope.aggregate_id if envelope.aggregate_type == "payment" else ""
    with (
        tracing.tracer().start_as_current_span(
            f"{envelope.event_type} process",
            context=tracing.context_of(envelope),
            kind=tracing.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.destination.name": stream,
                "messaging.message.id": envelope.event_id,
            },
            record_exception=False,
        ) as span,
        bound_flow(envelope.correlation_id, payment_id),
    ):
        yield span


def _aggregate_key(entry_id: bytes, fields: dict[bytes, bytes]) -> str:
    """The relay writes `aggregate_id` beside the envelope; an entry without one (written by
    hand) is ordered only against itself."""
    aggregate = fields.get(b"aggregate_id")
    return aggregate.decode(errors="replace") if aggregate else f"entry:{entry_id.decode()}"


def as_text(value: bytes | str) -> str:
    """A Redis reply's name or id as text (this client does not decode replies)."""
    return value.decode() if isinstance(value, bytes) else value


def _owned(reply: Any) -> list[tuple[str, str]]:
    """(entry id, owner) of each entry of an XPENDING range reply, which may be empty."""
    owned = []
    for item in reply or ():
        if not isinstance(item, dict):
            continue
        entry_id, owner = item.get("message_id"), item.get("consumer")
        if isinstance(entry_id, bytes | str) and isinstance(owner, bytes | str):
            owned.append((as_text(entry_id), as_text(owner)))
    return owned


def _after(entry_id: str) -> str:
    """The smallest stream id greater than `entry_id` (XPENDING's start is inclusive)."""
    millis, _, sequence = entry_id.partition("-")
    return f"{millis}-{int(sequence or 0) + 1}"


def _usable(entries: Any) -> list[Entry]:
    """Entries as the handling expects them, whatever Redis answered: a nil entry (an id
    without fields, trimmed from the stream while pending) keeps its id with no fields, so it
    is acknowledged and dropped; an entry without an id is skipped."""
    usable: list[Entry] = []
    for entry in entries or ():
        if not entry or entry[0] is None:
            continue
        usable.append((entry[0], entry[1] or {}))
    return usable
