"""The webhook benchmark's measure() runs against the rig (a smoke test, not a figure)."""

from __future__ import annotations

import pytest

from bench.webhook_bench import WebhookSigning, measure
from tests.conftest import PRIMARY_SECRET
from tests.integration.gateway_service.conftest import Rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_measure_reports_webhooks_and_the_trivial_baseline(rig: Rig) -> None:
    result = await measure(
        webhook_url=f"{rig.webhook_base}/webhooks/sim-primary",
        signing=WebhookSigning(PRIMARY_SECRET, "standard"),
        duration_s=0.5,
        concurrency=4,
    )

    assert result["webhooks_per_s"] > 0
    assert result["webhook_failures"] == 0
    assert result["webhook_p50_ms"] <= result["webhook_p99_ms"]
    assert result["trivial_http_per_s"] > 0
    assert result["http_trivial_per_s"] == result["trivial_http_per_s"]
