import asyncio
import random

import pytest

from common.group_commit import GroupCommit, Job


class Recorder:
    def __init__(self, *, fail_batches: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.fail_batches = fail_batches

    async def run_batch(self, jobs: list[Job]) -> None:
        await asyncio.sleep(0.001)
        self.batches.append([job.spec for job in jobs])
        if self.fail_batches and len(jobs) > 1:
            raise RuntimeError("lost a race")
        for job in jobs:
            if job.spec < 0:
                job.fail(ValueError(job.spec))
            else:
                job.settle(job.spec * 10)

    async def run_alone(self, jobs: list[Job]) -> None:
        (job,) = jobs
        self.alone.append(job.spec)
        job.settle(job.spec * 10)


async def test_requests_arriving_together_share_a_batch_and_get_their_own_answers() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.run_batch, recorder.run_alone, max_batch=8, workers=2)
    results = await asyncio.gather(
        *(group.submit(n) for n in range(40)), group.submit(-1), return_exceptions=True
    )
    assert results[:40] == [n * 10 for n in range(40)]
    assert isinstance(results[40], ValueError)
    assert max(len(batch) for batch in recorder.batches) == 8
    assert sorted(n for batch in recorder.batches for n in batch) == [-1, *range(40)]


async def test_a_batch_that_cannot_commit_runs_each_request_alone() -> None:
    recorder = Recorder(fail_batches=True)
    group = GroupCommit(recorder.run_batch, recorder.run_alone, max_batch=8, workers=1)
    results = await asyncio.gather(*(group.submit(n) for n in range(10)))
    assert results == [n * 10 for n in range(10)]
    assert sorted(recorder.alone) == sorted(
        n for batch in recorder.batches if len(batch) > 1 for n in batch
    )


async def test_no_request_is_stranded_when_workers_come_and_go() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.run_batch, recorder.run_alone, max_batch=4, workers=2)
    rng = random.Random(1)

    async def client(n: int) -> int:
        await asyncio.sleep(rng.random() / 200)
        result: int = await group.submit(n)
        return result

    results = await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(300))), 10)
    assert results == [n * 10 for n in range(300)]


@pytest.mark.parametrize("workers", [1, 4])
async def test_sequential_requests_are_batches_of_one(workers: int) -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.run_batch, recorder.run_alone, workers=workers)
    for n in range(5):
        assert await group.submit(n) == n * 10
    assert recorder.batches == [[n] for n in range(5)]
