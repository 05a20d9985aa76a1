from __future__ import annotations

import asyncio

from bench.load import closed_loop, open_loop


async def test_closed_loop_keeps_each_client_busy_until_the_deadline() -> None:
    in_flight = 0
    most = 0

    async def call(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return i

    samples = await closed_loop(call, clients=4, duration_s=0.1)
    assert most == 4
    assert len(samples) >= 20
    assert sorted(s.result for s in samples if s.result is not None) == list(range(len(samples)))
    assert all(s.latency >= 0.009 for s in samples)


async def test_a_failing_call_is_a_sample_with_its_error() -> None:
    async def call(_i: int) -> None:
        raise RuntimeError("boom")

    samples = await closed_loop(call, clients=1, duration_s=0.01)
    assert samples
    assert samples[0].result is None
    assert samples[0].error == "RuntimeError: boom"


async def test_open_loop_sends_at_the_rate_whatever_the_answers_take() -> None:
    async def slow(i: int) -> int:
        await asyncio.sleep(0.2)  # slower than the arrival interval
        return i

    samples = await open_loop(slow, rate_per_s=100, duration_s=0.2)
    assert len(samples) == 20
    starts = sorted(s.started for s in samples)
    assert starts[-1] - starts[0] < 0.25
    assert all(s.latency >= 0.19 for s in samples)
