"""A small file-backed store: the simulator's operations and events survive its restart.

An append-only JSON-lines file; each line is the latest state of one record, and loading keeps
the last line per id. A real PSP does not forget an accepted charge when it restarts, and
neither may the simulator, or the payments behind its unsettled charges stay pending forever.
Appends are flushed, not fsynced: the simulator survives a process restart, not a power cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from provider_simulator.models import Operation, WebhookEvent


class Store:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._file: IO[str] | None = None

    def load(self) -> tuple[dict[str, Operation], dict[str, WebhookEvent]]:
        operations: dict[str, Operation] = {}
        events: dict[str, WebhookEvent] = {}
        if self._path is None or not self._path.exists():
            return operations, events
        with self._path.open() as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash mid-write: the previous state stands
                kind, data = record.get("t"), record.get("d", {})
                if kind == "op":
                    operations[data["id"]] = Operation(**data)
                elif kind == "event":
                    events[data["id"]] = WebhookEvent(**data)
        return operations, events

    def open(self) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("a")

    def save_operation(self, operation: Operation) -> None:
        self._append("op", operation.record())

    def save_event(self, event: WebhookEvent) -> None:
        self._append("event", event.record())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"t": kind, "d": data}, separators=(",", ":")) + "\n")
        self._file.flush()
