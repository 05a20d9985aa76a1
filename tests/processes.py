"""Running one of our entrypoints as a real child process, the way an operator does."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass

from tests.tokens import TEST_AUTH_SECRET


async def spawn(module: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={**os.environ, "PAYSUITE_AUTH_SECRET": TEST_AUTH_SECRET, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@dataclass
class Started:
    process: asyncio.subprocess.Process
    log: bytes

    async def stop(self, signum: signal.Signals = signal.SIGTERM) -> tuple[int, bytes]:
        """Signals the process and returns its exit code and the rest of its log."""
        self.process.send_signal(signum)
        async with asyncio.timeout(15):
            _, rest = await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode, rest


async def start(module: str, started_marker: bytes, **env: str) -> Started:
    """Spawns `module` and waits until its log shows `started_marker`."""
    process = await spawn(module, **env)
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(15):
        while started_marker not in seen:
            line = await process.stderr.readline()
            assert line, f"{module} exited before starting: {seen.decode()}"
            seen += line
    return Started(process, seen)
