"""``python -m provider_simulator`` as an operator runs it: a real child process."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import urllib.request

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


def _free_port() -> int:
    # Below the ephemeral range, like `paysuite up`: a kernel-assigned port can be taken by
    # another process's outgoing connection before the child binds it.
    start = secrets.randbelow(12_000)
    for offset in range(12_000):
        port = 20_000 + (start + offset) % 12_000
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


async def test_serves_prometheus_metrics_on_the_suites_metrics_port() -> None:
    # compose and k8s scrape every process on PAYSUITE_METRICS_PORT; the simulators too.
    port = _free_port()
    started = await start(
        "provider_simulator",
        b"simulator.started",
        PAYSUITE_SIMULATOR_LISTEN_PORT="0",
        PAYSUITE_METRICS_PORT=str(port),
        PAYSUITE_METRICS_HOST="127.0.0.1",
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert b"process_cpu_seconds_total" in body
    finally:
        code, rest = await started.stop()
    assert code == 0, (started.log + rest).decode()
