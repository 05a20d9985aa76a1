"""The bench as a client that honours admission control: a create refused RESOURCE_EXHAUSTED
(nothing was done) is sent again, with the same idempotency key, after its RetryInfo delay,
and the refusals are counted so the report shows the rejected share beside the loop's figures.

A sample's clock starts before the first attempt, so its latency (create → completed too)
includes every wait: what a caller of an overloaded suite lives through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from common.grpc.retry_info import overload_delay_s

T = TypeVar("T")

# Refused for longer than this, the call fails as any other error would (counted, noted).
GIVE_UP_AFTER_S = 60.0


@dataclass
class Refusals:
    attempts: int = 0  # create calls sent, repeats included
    rejected: int = 0  # of which RESOURCE_EXHAUSTED

    def figures(self, kind: str, phase: str = "") -> dict[str, float]:
        """`<kind>_rejected[_<phase>]` (calls) and `<kind>_rejected_share[_<phase>]` (% of the
        attempts), named as the loop's `<kind>_errors[_<phase>]`."""
        share = self.rejected / self.attempts if self.attempts else 0.0
        tail = f"_{phase}" if phase else ""
        return {
            f"{kind}_rejected{tail}": float(self.rejected),
            f"{kind}_rejected_share{tail}": 100.0 * share,
        }


async def admitted(
    call: Callable[[], Awaitable[T]],
    refusals: Refusals,
    *,
    give_up_after_s: float = GIVE_UP_AFTER_S,
) -> T:
    """`call`'s answer, sent again after each RESOURCE_EXHAUSTED's delay."""
    deadline = time.monotonic() + give_up_after_s
    while True:
        refusals.attempts += 1
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            delay = overload_delay_s(exc)
            if delay is None or time.monotonic() > deadline:
                raise
            refusals.rejected += 1
            await asyncio.sleep(delay)
