"""`python -m recovery_worker` and `paysuite recover --once` as real processes against the
suite, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from common.config import Settings
from common.ports import free_port
from tests.integration.recovery_worker.conftest import Rig
from tests.tokens import TEST_AUTH_SECRET

pytestmark = [pytest.mark.integration]

CLI = "from paysuite_cli.main import run; run()"


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSUITE_")}
    env.update(
        {
            "PAYSUITE_REDIS_URL": settings.require_redis_url(),
            "PAYSUITE_STREAM_PREFIX": settings.stream_prefix,
            "PAYSUITE_PAYMENT_TARGET": settings.payment_target,
            "PAYSUITE_GATEWAY_TARGET": settings.gateway_target,
            "PAYSUITE_WALLET_TARGET": settings.wallet_target,
            "PAYSUITE_AUTH_SECRET": TEST_AUTH_SECRET,
            "COLUMNS": "200",
            **extra,
        }
    )
    return env


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_recover_once_prints_what_every_sweep_did(rig: Rig) -> None:
    code, output = await run_cli(environment(rig.settings), "recover", "--once")

    assert code == 0, output
    rows = {line.split("│")[1].strip(): line for line in output.splitlines() if "│" in line}
    assert {"pending", "initiated", "refunding", "expired_holds", "pipeline"} <= rows.keys()
    assert all("done" in rows[name] for name in ("pending", "expired_holds", "pipeline"))


async def test_recover_once_without_a_payment_service_is_one_line_and_exit_2(rig: Rig) -> None:
    env = environment(rig.settings, PAYSUITE_PAYMENT_TARGET=f"127.0.0.1:{free_port()}")

    code, output = await run_cli(env, "recover", "--once")

    assert code == 2
    assert len(output.strip().splitlines()) == 1
    assert "the payment service does not answer" in output


async def test_the_worker_process_sweeps_and_exits_0_on_sigterm(rig: Rig) -> None:
    env = environment(
        rig.settings,
        PAYSUITE_RECOVERY_LISTEN=f"127.0.0.1:{free_port()}",
        PAYSUITE_RECOVERY_INTERVAL_S="0.2",
        PAYSUITE_LOG_FORMAT="json",
        PAYSUITE_LOG_LEVEL="DEBUG",
        PAYSUITE_SHUTDOWN_GRACE_S="0.5",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recovery_worker", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    swept: set[str] = set()
    try:
        async with asyncio.timeout(20):
            while "pipeline" not in swept:
                line = await process.stderr.readline()
                assert line, "the worker exited early"
                if line.startswith(b"{"):
                    event = json.loads(line)
                    if event["event"] == "recovery.sweep_done":
                        swept.add(event["sweep"])
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=15)

    assert process.returncode == 0
    assert {"pending", "initiated", "refunding", "expired_holds", "pipeline"} <= swept
