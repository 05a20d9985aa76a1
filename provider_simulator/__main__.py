"""``python -m provider_simulator``: serve until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import signal
import sys

from common import aio
from common.logging import configure_logging
from common.metrics import metrics_for
from common.tracing import configure_tracing
from provider_simulator.app import serve
from provider_simulator.settings import SettingsError, SimulatorSettings, load_settings

NAME = "provider-simulator"


async def _run(settings: SimulatorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop)


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, fmt=settings.log_format, service=NAME)
    configure_tracing(service=NAME, otlp_endpoint=settings.otlp_endpoint)
    try:
        with metrics_for(NAME, settings.metrics_port, settings.metrics_host):
            aio.run(_run(settings))
    except OSError as exc:  # typically the port is taken, or the data folder is not writable
        where = (
            f"use {exc.filename}"
            if exc.filename
            else f"listen on {settings.listen_host}:{settings.listen_port}"
        )
        print(f"provider simulator cannot {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
