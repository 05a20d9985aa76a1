"""The resume sweep at start-up: at once, with a short threshold, page after page; then on
its normal threshold; a database outage at start-up does not skip it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import cast

from common.errors import DependencyUnavailable
from payment_service.entrypoints.housekeeping import PAGE, SagaResumer
from payment_service.service_layer.recovery import Recovery

AFTER = timedelta(seconds=2)  # the threshold; it waits half of it between sweeps


class FakeService:
    """Answers resume_stalled from a script (a count resumed, or an exception raised); the
    last call of the script stops the sweeper."""

    def __init__(self, script: list[int | Exception], stop: asyncio.Event) -> None:
        self.script = script
        self.stop = stop
        self.calls: list[timedelta] = []

    async def resume_stalled(self, *, older_than: timedelta, limit: int) -> int:
        assert limit == PAGE
        self.calls.append(older_than)
        answer = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def resume_deferred(self) -> int:
        return 0


async def run(script: list[int | Exception]) -> list[timedelta]:
    stop = asyncio.Event()
    service = FakeService(script, stop)
    resumer = SagaResumer(cast(Recovery, service), after=AFTER)
    async with asyncio.timeout(10):
        await resumer.run(stop)
    return service.calls


async def test_a_restarted_service_resumes_at_once_what_its_predecessor_left() -> None:
    calls = await run([PAGE, 3, 0])
    # Two pages at start-up (the first was full), then the normal threshold.
    assert calls == [SagaResumer.AT_START, SagaResumer.AT_START, AFTER]


async def test_the_start_up_sweep_is_retried_soon_when_the_database_is_down() -> None:
    calls = await run([DependencyUnavailable("database down"), 0, 0])
    # Tried again with the start-up threshold (after RETRY_S), not left to the next period.
    assert calls == [SagaResumer.AT_START, SagaResumer.AT_START, AFTER]


async def test_one_sweep_takes_a_bounded_number_of_pages() -> None:
    # While the gateway is down the same payments come back page after page.
    calls = await run([PAGE] * 10 + [0])
    assert calls == [SagaResumer.AT_START] * 10 + [AFTER]
