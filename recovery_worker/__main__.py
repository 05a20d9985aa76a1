"""`python -m recovery_worker`: validated settings, then sweep until SIGTERM/SIGINT (exit 0)."""

from __future__ import annotations

import sys

from common import aio
from common.config import ConfigError, load_settings
from common.grpc.server import run_until_signalled
from common.logging import configure_logging
from common.metrics import metrics_for
from common.tracing import configure_tracing
from recovery_worker import bootstrap


def main() -> None:
    try:
        settings = load_settings()
        settings.require_redis_url()
    except ConfigError as exc:
        print(f"{bootstrap.NAME}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(level=settings.log_level, fmt=settings.log_format, service=bootstrap.NAME)
    configure_tracing(service=bootstrap.NAME, otlp_endpoint=settings.otlp_endpoint)

    async def serve() -> None:
        runtime = await bootstrap.build(settings, settings.recovery_listen)
        await run_until_signalled(runtime, grace=settings.shutdown_grace_s)

    with metrics_for(bootstrap.NAME, settings.metrics_port, settings.metrics_host):
        aio.run(serve())


main()
