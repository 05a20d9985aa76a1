"""Crash points for crash-resume tests.

`PAYSUITE_FAULTS=point[,point...]` makes the process die on the spot (exit 137, as after a
SIGKILL: no cleanup, no flush) when it reaches a named point. Unset in every deployment; a
point costs one set lookup. The points sit right after a durable step and before the next
recovery point, where a real crash hurts most.
"""

from __future__ import annotations

import os

_ACTIVE = frozenset(p for p in os.environ.get("PAYSUITE_FAULTS", "").split(",") if p)


def crash_point(name: str) -> None:
    if name in _ACTIVE:
        os._exit(137)
