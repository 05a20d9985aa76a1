"""``python -m provider_simulator`` as an operator runs it: a real child process."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.processes import spawn, start


async def _spawn(**env: str) -> asyncio.subprocess.Process:
    return await spawn("provider_simulator", **{"PAYSUITE_SIMULATOR_LISTEN_PORT": "0", **env})


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_runs_until_signalled_then_stops_gracefully(signum: signal.Signals) -> None:
    started = await start(
        "provider_simulator", b"simulator.started", PAYSUITE_SIMULATOR_LISTEN_PORT="0"
    )
    code, rest = await started.stop(signum)
    assert code == 0, (started.log + rest).decode()
    assert b"simulator.stopped" in rest
    assert b"Traceback" not in rest


async def test_bad_configuration_exits_with_a_clear_message() -> None:
    process = await _spawn(PAYSUITE_SIMULATOR_SETTLE_DELAY_MS="soon")
    async with asyncio.timeout(10):
        _, stderr = await process.communicate()

    assert process.returncode == 2
    assert b"PAYSUITE_SIMULATOR_SETTLE_DELAY_MS" in stderr
    assert b"Traceback" not in stderr
