"""The bench honours admission control: a refused create is repeated after its delay, with
the same request, and the refusals are counted for the report."""

from __future__ import annotations

import grpc
import pytest

from bench.admission import Refusals, admitted
from common.errors import Overloaded
from common.grpc.errors import rich_status


def refusal(delay_s: float) -> grpc.aio.AioRpcError:
    code, message, details = rich_status(Overloaded("busy", retry_after_s=delay_s), "r")
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(("grpc-status-details-bin", details)), message
    )


async def test_a_refused_call_is_repeated_until_admitted() -> None:
    answers: list[object] = [refusal(0.01), refusal(0.01), "payment"]

    async def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    refusals = Refusals()
    assert await admitted(call, refusals) == "payment"
    assert (refusals.attempts, refusals.rejected) == (3, 2)
    assert refusals.figures("deposit", "closed") == {
        "deposit_rejected_closed": 2.0,
        "deposit_rejected_share_closed": pytest.approx(200 / 3),
    }


async def test_other_errors_and_refusals_past_the_patience_are_raised() -> None:
    async def unavailable() -> str:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
        )

    async def refused() -> str:
        raise refusal(0.01)

    refusals = Refusals()
    with pytest.raises(grpc.aio.AioRpcError):
        await admitted(unavailable, refusals)
    with pytest.raises(grpc.aio.AioRpcError):
        await admitted(refused, refusals, give_up_after_s=0.05)
    assert refusals.rejected >= 1
    assert Refusals().figures("transfer") == {
        "transfer_rejected": 0.0,
        "transfer_rejected_share": 0.0,
    }
