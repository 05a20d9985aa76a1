"""A payment command refused by admission control says what to do: the same command, the
same key, after the delay (exit code 1, one line)."""

from __future__ import annotations

import grpc
import pytest

from common.errors import Overloaded, RateLimited
from common.grpc.errors import rich_status
from paysuite_cli.errors import REFUSED, explain
from paysuite_cli.payments import _busy_says_repeat


async def test_a_refusal_names_the_key_to_repeat_with_and_the_wait() -> None:
    code, message, details = rich_status(RateLimited("slow down", retry_after_s=1.2), "r")
    refusal = grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(("grpc-status-details-bin", details)), message
    )
    with pytest.raises(Overloaded) as raised:
        async with _busy_says_repeat("cli-key-1"):
            raise refusal
    assert explain(raised.value) == (
        REFUSED,
        "the suite is busy (RATE_LIMITED) and did nothing: run the same command again with"
        " --key cli-key-1 in 2 s or later",
    )


async def test_other_errors_pass_through() -> None:
    other = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    with pytest.raises(grpc.aio.AioRpcError):
        async with _busy_says_repeat("k"):
            raise other
