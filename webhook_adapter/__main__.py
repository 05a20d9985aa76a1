"""`python -m webhook_adapter`: serve until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from common import aio
from common.config import ConfigError, Settings, load_settings
from common.logging import configure_logging
from common.metrics import metrics_for
from common.tracing import configure_tracing
from webhook_adapter.app import start

NAME = "webhook-adapter"

log = structlog.get_logger(__name__)


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, _ = await start(settings, settings.webhook_listen)
    try:
        await stop.wait()
    finally:
        log.info("webhook.stopping")
        await runner.cleanup()
        log.info("webhook.stopped")


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, fmt=settings.log_format, service=NAME)
    configure_tracing(service=NAME, otlp_endpoint=settings.otlp_endpoint)
    try:
        with metrics_for(NAME, settings.metrics_port, settings.metrics_host):
            aio.run(_serve(settings))
    except ConfigError as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # typically the port is taken
        print(
            f"{NAME}: cannot listen on {settings.webhook_listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
