"""`python -m devstack.embedded_watchdog PGDATA REDIS_DIR`: stops the embedded servers once their
owner is gone (see devstack.embedded).

It waits for end-of-file on its stdin, a pipe only the owner holds open: the owner closes it
when it is done, and the kernel closes it when the owner dies, by SIGKILL too. Then it stops
Redis (SHUTDOWN on its socket) and PostgreSQL (a fast shutdown of the postmaster on PGDATA),
whichever still runs, and exits, which frees the folder's lock it inherited.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

from devstack.embedded import stop_postgres, stop_redis


def main(argv: list[str]) -> int:
    pgdata, redis_dir = (Path(arg) for arg in argv)
    # SIGTERM (a `kill` of it, a container stopping) stops the servers as EOF does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.buffer.read()
    stop_redis(redis_dir / "redis.sock")
    stop_postgres(pgdata)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
