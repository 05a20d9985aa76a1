"""`paysuite providers` and `paysuite sim set` as an operator runs them, against the rig."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.integration.gateway_service.conftest import Rig
from tests.tokens import TEST_AUTH_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def paysuite(rig: Rig, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "PAYSUITE_GATEWAY_TARGET": rig.settings.gateway_target,
        "PAYSUITE_PROVIDER_URL": rig.sims.urls["sim-primary"],
        "PAYSUITE_PROVIDER_SECONDARY_URL": rig.sims.urls["sim-secondary"],
        "PAYSUITE_AUTH_SECRET": TEST_AUTH_SECRET,
        "COLUMNS": "200",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "paysuite"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_providers_lists_each_breaker(rig: Rig) -> None:
    code, out = await paysuite(rig, "providers")

    assert code == 0, out
    assert "sim-primary" in out
    assert "sim-secondary" in out
    assert "closed" in out


async def test_sim_set_changes_a_simulator_at_run_time(rig: Rig) -> None:
    code, out = await paysuite(rig, "sim", "set", "sim-secondary", "decline_rate=0.5")

    assert code == 0, out
    assert '"decline_rate": 0.5' in out
    await rig.sims.reset()
    code, out = await paysuite(rig, "sim", "set", "sim-primary", "decline_rate=7")
    assert code == 1
