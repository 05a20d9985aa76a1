"""requirements.runtime.lock, which the Docker image installs, against requirements.lock and
pyproject.toml: the same pins, every runtime dependency present, no dev or bench tool in it.

When this fails after a dependency change, regenerate both locks with `make lock`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {_normalise(name): version for name, version in _PIN.findall(text)}


def _names(requirements: list[str]) -> set[str]:
    return {_normalise(m.group(1)) for r in requirements if (m := _NAME.match(r))}


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def test_runtime_pins_are_the_full_locks_pins() -> None:
    full, runtime = _pins("requirements.lock"), _pins("requirements.runtime.lock")
    assert {name: v for name, v in runtime.items() if full.get(name) != v} == {}


def test_every_runtime_dependency_is_in_the_runtime_lock() -> None:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    assert _names(dependencies) - set(_pins("requirements.runtime.lock")) == set()


def test_no_dev_or_bench_tool_is_in_the_runtime_lock() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    tools = _names([r for group in extras.values() for r in group])
    assert tools & set(_pins("requirements.runtime.lock")) == set()
