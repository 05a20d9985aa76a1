"""``python -m provider_simulator`` as an operator runs it: a real child process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest


async def _spawn(**env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provider_simulator",
        env={**os.environ, "PAYSUITE_SIMULATOR_LISTEN_PORT": "0", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_runs_until_signalled_then_stops_gracefully(signum: signal.Signals) -> None:
    process = await _spawn()
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(10):
        while b"simulator.started" not in seen:
            line = await process.stderr.readline()
            assert line, f"exited before starting: {seen.decode()}"
            seen += line

        process.send_signal(signum)
        _, rest = await process.communicate()

    assert process.returncode == 0, (seen + rest).decode()
    assert b"simulator.stopped" in rest
    assert b"Traceback" not in rest


async def test_bad_configuration_exits_with_a_clear_message() -> None:
    process = await _spawn(PAYSUITE_SIMULATOR_SETTLE_DELAY_MS="soon")
    async with asyncio.timeout(10):
        _, stderr = await process.communicate()

    assert process.returncode == 2
    assert b"PAYSUITE_SIMULATOR_SETTLE_DELAY_MS" in stderr
    assert b"Traceback" not in stderr
