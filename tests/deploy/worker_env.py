"""Whether the recovery worker starts with the environment a deployment gives it: the same
checks `python -m recovery_worker` makes before it does anything (a failure there exits 2,
which a restart policy turns into a crash loop)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings, load_settings


def worker_settings(
    env: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> Settings:
    """Settings as the worker loads them from exactly `env` (nothing inherited from this
    machine, and no embedded suite's endpoints file to fall back on)."""
    for name in [n for n in os.environ if n.startswith("PAYSUITE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        assert isinstance(value, str), f"{name} is not a plain value: {value!r}"
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(workdir)
    settings = load_settings()
    assert settings.require_redis_url() == env["PAYSUITE_REDIS_URL"]
    assert settings.recovery_listen == "0.0.0.0:50054"
    return settings
