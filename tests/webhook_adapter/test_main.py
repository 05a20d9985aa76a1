"""`python -m webhook_adapter` as an operator runs it: a real child process."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.processes import spawn, start


async def _spawn(**env: str) -> asyncio.subprocess.Process:
    return await spawn("webhook_adapter", **{"PAYSUITE_WEBHOOK_LISTEN": "127.0.0.1:0", **env})


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_runs_until_signalled_then_stops_gracefully(signum: signal.Signals) -> None:
    started = await start(
        "webhook_adapter",
        b"webhook.started",
        PAYSUITE_WEBHOOK_LISTEN="127.0.0.1:0",
        PAYSUITE_ALLOW_DEV_SECRETS="true",
    )
    code, rest = await started.stop(signum)
    assert code == 0, (started.log + rest).decode()
    assert b"webhook.stopped" in rest
    assert b"Traceback" not in rest


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PAYSUITE_RPC_TIMEOUT_MS": "soon"}, b"PAYSUITE_RPC_TIMEOUT_MS"),
        (
            {"PAYSUITE_WEBHOOK_SECRET": "whsec_*", "PAYSUITE_ALLOW_DEV_SECRETS": "true"},
            b"PAYSUITE_WEBHOOK_SECRET",
        ),
        ({}, b"PAYSUITE_ALLOW_DEV_SECRETS"),
    ],
    ids=["settings", "secret", "development-secret"],
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
