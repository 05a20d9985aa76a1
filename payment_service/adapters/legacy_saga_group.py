"""Retires the saga's consumer group from the public payment stream, where versions before
the saga stream (`paysuite.payment.saga`) kept it.

Left there, nobody would read it again: its lag would grow with every payment event, the relay
would never trim the stream below it (it trims only what every group acknowledged), and the
pipeline sweep would report it stalled for ever. So it is destroyed once none of its consumers
has tried to read for `idle_after`: during a rolling upgrade the old replicas still read it,
and it stays until they are gone. A trigger it held unread belongs to a payment that stopped
between two steps: the resume sweep (`SagaResumer`) moves on those still `initiated` or
`refunding`, and a cancelled payment's hold is released when it expires (the wallet's hold
expiry). None is lost; some wait longer.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.aio import wait_any
from common.errors import DependencyUnavailable
from common.streams import as_text, redis_boundary
from common.supervision import beat

log = structlog.get_logger(__name__)


class LegacySagaGroup:
    def __init__(
        self,
        redis: Redis,
        *,
        stream: str,
        group: str,
        idle_after: timedelta = timedelta(minutes=2),
        every_s: float = 60.0,
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._idle_ms = int(idle_after.total_seconds() * 1000)
        self.every_s = every_s

    async def retire_if_idle(self) -> bool:
        """Destroys the group when it exists and none of its consumers read lately; True
        when it did."""
        async with redis_boundary("XINFO GROUPS"):
            try:
                groups: list[dict[str, Any]] = await self._redis.xinfo_groups(self._stream)
            except ResponseError:  # no such stream: nothing to retire
                return False
            found = next((g for g in groups if as_text(g["name"]) == self._group), None)
            if found is None:
                return False
            consumers: list[dict[str, Any]] = await self._redis.xinfo_consumers(
                self._stream, self._group
            )
            if any(int(c.get("idle", 0)) < self._idle_ms for c in consumers):
                return False
            await self._redis.xgroup_destroy(self._stream, self._group)
        log.warning(
            "payment.legacy_saga_group_retired",
            stream=self._stream,
            group=self._group,
            pending=int(found.get("pending", 0)),
            lag=found.get("lag"),
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            try:
                await self.retire_if_idle()
            except DependencyUnavailable as exc:
                log.warning("payment.legacy_saga_group_waiting", error=str(exc))
            await wait_any(stop, at_most_s=self.every_s)
