"""Loads docker-compose files the way Docker Compose does, as far as validating them needs.

Compose (compose-go) parses each file, interpolates `${VAR}` in it with the variables it was
given (shell environment, `.env` or `--env-file`), and only then merges the files in order.
That order matters to us: a `${VAR:?}` in the base file can only be satisfied by a variable,
never by an override file. We follow the same steps so the tests see what `docker compose
config` would, without a Docker engine:

- interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
  `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`, in every string value (keys are left alone);
- merging: mappings merge key by key, `command` / `entrypoint` / healthcheck `test` are replaced,
  other sequences are appended without duplicates, scalars are replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)
# Keys whose sequences an override replaces instead of extending (compose-spec merge rules).
_REPLACED_SEQUENCES = frozenset({"command", "entrypoint", "test"})


class MissingVariableError(ValueError):
    """A `${VAR:?message}` or `${VAR?message}` whose variable is unset (or empty, for `:?`)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped, no quoting needed by our files."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            env[key.strip()] = value
    return env


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Every string in `node` with its variables substituted; raises on a required one."""
    if isinstance(node, str):
        return _VARIABLE.sub(lambda match: _substitute(match, env), node)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def missing_variables(node: Any, env: Mapping[str, str]) -> set[str]:
    """The names of every required variable that `env` leaves unset, across the whole file."""
    missing: set[str] = set()
    for text in _strings(node):
        for match in _VARIABLE.finditer(text):
            try:
                _substitute(match, env)
            except MissingVariableError as exc:
                missing.add(exc.name)
    return missing


def merge(base: Any, override: Any, key: str = "") -> Any:
    """`override` merged onto `base` by the compose-spec rules (see the module docstring)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        return base + [item for item in override if item not in base]
    return override


def load(files: list[Path], env: Mapping[str, str]) -> dict[str, Any]:
    """The files parsed, interpolated one by one, then merged in order, as compose does."""
    model: dict[str, Any] = {}
    for path in files:
        document = yaml.safe_load(path.read_text())
        model = merge(model, interpolate(document, env))
    return model


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group("escaped"):
        return "$"
    if match.group("named"):
        return env.get(match.group("named"), "")
    braced = _BRACED.match(match.group("braced"))
    if braced is None:
        raise ValueError(f"invalid interpolation: {match.group(0)!r}")
    name, op, arg = braced.group("name"), braced.group("op"), braced.group("arg")
    value = env.get(name)
    unset_or_empty = not value if op and op.startswith(":") else value is None
    if op in (":-", "-"):
        return arg if unset_or_empty else str(value)
    if op in (":?", "?"):
        if unset_or_empty:
            raise MissingVariableError(name, arg)
        return str(value)
    if op in (":+", "+"):
        return "" if unset_or_empty else arg
    return value or ""


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []
