"""Whether the recovery worker starts with the environment a deployment gives it: its settings
load and it builds (`recovery_worker.bootstrap.build`, which makes every start-up check before
it connects anywhere). A failure there exits 2, which a restart policy turns into a crash loop.
Nothing is started and nothing is dialled."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings, load_settings
from recovery_worker import bootstrap

# A Secret's value is created out of band (k8s/README.md): any value of the right shape will do.
FROM_SECRET = "stand-in-for-a-value-read-from-a-kubernetes-secret-0123456789abcdef"


# What the downward API gives a pod's `metadata.name`.
POD_NAME = "recovery-worker-7d9c5b6f4-x2k8q"


def _value(name: str, value: Any) -> str:
    if isinstance(value, dict) and "secretKeyRef" in value:
        return FROM_SECRET
    if isinstance(value, dict) and value.get("fieldRef", {}).get("fieldPath") == "metadata.name":
        return POD_NAME
    assert isinstance(value, str), f"{name} is neither a value nor a Secret's: {value!r}"
    return value


async def worker_starts(
    env: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> Settings:
    """Settings as the worker loads them from exactly `env` (nothing inherited from this
    machine, and no embedded suite's endpoints file to fall back on), and the worker built."""
    for name in [n for n in os.environ if n.startswith("PAYSUITE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, _value(name, value))
    monkeypatch.chdir(workdir)
    settings = load_settings()
    assert settings.require_redis_url() == env["PAYSUITE_REDIS_URL"]
    assert settings.recovery_listen == "0.0.0.0:50054"
    runtime = await bootstrap.build(settings, "127.0.0.1:0")
    await runtime.stop(grace=0)
    return settings
