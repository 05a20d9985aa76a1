"""The wallet section of `make bench` runs against a real wallet and reports its figures."""

from __future__ import annotations

import pytest

from bench.wallet_bench import measure
from tests.conftest import Suite
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_the_wallet_bench_measures_postings_beside_the_trivial_call(suite: Suite) -> None:
    figures = await measure(suite.wallet_target, make_token(), duration_s=1.0, concurrency=4)
    assert figures["wallet_trivial_calls_per_s"] > 0
    assert figures["wallet_postings_distinct_per_s"] > 0
    assert figures["wallet_postings_hot_per_s"] > 0
    assert figures["wallet_postings_batched_per_s"] > 0
    assert figures["wallet_errors"] == 0
    for rpc in ("credit", "debit", "transfer", "hot_credit", "hot_debit", "batched_credit"):
        assert 0 < figures[f"wallet_{rpc}_p50_ms"] <= figures[f"wallet_{rpc}_p99_ms"]
