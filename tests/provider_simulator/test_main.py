"""``python -m provider_simulator`` as an operator runs it: a real child process."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

import pytest

from common.config import Settings
from common.ports import free_port
from devstack import supervisor
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


@pytest.mark.parametrize(
    ("index", "variable"),
    [(0, "PAYSUITE_WEBHOOK_SECRET"), (1, "PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET")],
    ids=["sim-primary", "sim-secondary"],
)
async def test_the_development_secret_warning_names_the_variable_that_sets_it(
    index: int, variable: str, tmp_path: Path
) -> None:
    """Each simulator as `paysuite up` runs it (development secrets): the warning names the
    suite's variable its secret comes from, not the one its launcher passes it in."""
    settings = Settings()
    simulators = [p for p in supervisor.plan(settings) if p.module == "provider_simulator"]
    env = {
        **dict(simulators[index].env),
        "PAYSUITE_SIMULATOR_LISTEN_PORT": "0",
        "PAYSUITE_SIMULATOR_DATA_DIR": str(tmp_path),
    }
    started = await start("provider_simulator", b"simulator.started", **env)
    code, rest = await started.stop()
    log = (started.log + rest).decode()
    assert code == 0, log
    warning = next(line for line in log.splitlines() if "development_webhook_secret" in line)
    assert f"env_var={variable}" in warning


async def test_serves_prometheus_metrics_on_the_suites_metrics_port() -> None:
    # compose and k8s scrape every process on PAYSUITE_METRICS_PORT; the simulators too.
    port = free_port()
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
