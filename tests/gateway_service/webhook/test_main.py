"""`python -m gateway_service.webhook` as an operator runs it: a real child process."""

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
        "gateway_service.webhook",
        env={**os.environ, "PAYSUITE_WEBHOOK_LISTEN": "127.0.0.1:0", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_runs_until_signalled_then_stops_gracefully(signum: signal.Signals) -> None:
    process = await _spawn()
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(10):
        while b"webhook.started" not in seen:
            line = await process.stderr.readline()
            assert line, f"exited before starting: {seen.decode()}"
            seen += line

        process.send_signal(signum)
        _, rest = await process.communicate()

    assert process.returncode == 0, (seen + rest).decode()
    assert b"webhook.stopped" in rest
    assert b"Traceback" not in rest


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PAYSUITE_RPC_TIMEOUT_MS": "soon"}, b"PAYSUITE_RPC_TIMEOUT_MS"),
        ({"PAYSUITE_WEBHOOK_SECRET": "whsec_*"}, b"PAYSUITE_WEBHOOK_SECRET"),
    ],
    ids=["settings", "secret"],
)
async def test_bad_configuration_exits_with_a_clear_message(
    env: dict[str, str], named: bytes
) -> None:
    process = await _spawn(**env)
    async with asyncio.timeout(10):
        _, stderr = await process.communicate()

    assert process.returncode == 2
    assert named in stderr
    assert b"Traceback" not in stderr
