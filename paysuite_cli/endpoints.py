"""Where the running suite is: the one way every `paysuite` command finds it.

`paysuite up` writes its addresses into `<data dir>/endpoints.json` (the embedded servers'
URLs, every gRPC address, the simulators' URLs, each process's /metrics) and removes the file
when it stops. A command reads that file under whatever the environment sets explicitly
(PAYSUITE_DATABASE_URL, PAYSUITE_PAYMENT_TARGET, ...), and without either there is no suite
to talk to: it says so instead of trying default ports.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.config import ENDPOINTS_FILE, Settings, load_settings

# Settings fields `paysuite up` publishes; the embedded servers add database_url/redis_url.
PUBLISHED = (
    "database_url",
    "redis_url",
    "payment_target",
    "wallet_target",
    "gateway_target",
    "provider_url",
    "provider_secondary_url",
)


class SuiteNotRunning(Exception):
    """No running suite is known here: printed as one line, exit code 2."""


def locate(settings: Settings | None = None) -> Settings:
    """The settings of the running suite, or SuiteNotRunning."""
    settings = settings if settings is not None else load_settings()
    path = settings.data_dir / ENDPOINTS_FILE
    published = _read(path)
    explicit = settings.model_fields_set
    # An address set explicitly (PAYSUITE_GATEWAY_TARGET, a database URL, ...) names a suite
    # as surely as the file does: the command talks to what it was told to.
    if not published and not set(PUBLISHED) & explicit:
        raise SuiteNotRunning(f"no suite is running ({path} not found): start it with `make run`")
    found = {k: v for k, v in published.items() if k in PUBLISHED and k not in explicit}
    return settings.model_copy(update=found)


@contextmanager
def published(data_dir: Path, settings: Settings, *, wallet_target: str = "") -> Iterator[None]:
    """Adds the suite's gRPC and simulator addresses to the endpoints file while it runs.
    `wallet_target`: one naming every wallet replica (devstack.supervisor.wallet_target);
    unset, the one wallet's listen address."""
    path = data_dir / ENDPOINTS_FILE
    entries = {
        "payment_target": settings.payment_listen,
        "wallet_target": wallet_target or settings.wallet_listen,
        "gateway_target": settings.gateway_listen,
        "provider_url": settings.provider_url,
        "provider_secondary_url": settings.provider_secondary_url,
    }
    path.write_text(json.dumps({**_read(path), **entries}))
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
