"""The third-party images the compose stack runs, for a host that cannot pull them.

Where a registry answers, compose uses the official images (python:3.11-slim, postgres:16,
redis:7, prom/prometheus). Where none does, each is built here from Debian bookworm's own
packages: `debootstrap --variant=minbase` into a directory, a few files written into it, then
`docker import` with the image's user, entrypoint and environment. bookworm ships Python 3.11,
PostgreSQL 15, Redis 7.0 and Prometheus 2.42, which the suite and its config all accept.

Each image carries a label with a digest of its recipe (packages, files, settings); a run that
finds the tag with the same digest keeps it, so only the first run pays for debootstrap. The
.debs are kept in a cache directory, so a changed recipe downloads nothing it already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
RECIPE_LABEL = "io.paysuite.recipe"
CACHE = Path("/var/cache/paysuite-debootstrap")

# Like the official image's entrypoint, as far as the suite uses it: the first start (an empty
# data directory) creates the cluster with POSTGRES_USER / POSTGRES_PASSWORD, password
# authentication from the network, and listens on every interface of the container.
POSTGRES_ENTRYPOINT = """#!/bin/sh
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
  initdb --username="${POSTGRES_USER:-postgres}" --pwfile=/tmp/pwfile \\
    --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
fi
exec "$@"
"""


@dataclass(frozen=True)
class BaseImage:
    """One image: the registry image it stands in for, and how to make it from Debian."""

    name: str
    official: str
    local: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    # Files copied from the host into the same path of the image.
    host_files: tuple[str, ...] = ()
    # Shell run in the rootfs (chroot) after the files are written: users, directories.
    setup: str = ""

    def recipe_digest(self) -> str:
        files = sorted(self.files.items())
        recipe = [SUITE, self.packages, self.changes, files, self.host_files, self.setup]
        return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


PG_BIN = "/usr/lib/postgresql/15/bin"

IMAGES = (
    # The project image's base: Python 3.11 with venv, and tini already in (the Dockerfile
    # installs tini only when the base lacks it, so the build needs no Debian mirror). The
    # host's CA bundle goes in too: where the host reaches PyPI through a TLS-inspecting
    # proxy, pip in the image build must trust the same authorities.
    BaseImage(
        name="python",
        official="python:3.11-slim",
        local="paysuite-local/python:3.11",
        packages=("python3", "python3-venv", "python-is-python3", "tini", "ca-certificates"),
        changes=("ENV LANG=C.UTF-8", 'CMD ["python3"]'),
        host_files=("/etc/ssl/certs/ca-certificates.crt",),
    ),
    BaseImage(
        name="postgres",
        official="postgres:16",
        local="paysuite-local/postgres:15",
        packages=("postgresql-15",),
        changes=(
            f"ENV PATH={PG_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV PGDATA=/var/lib/postgresql/data",
            "ENV LANG=C.UTF-8",
            "USER postgres",
            'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]',
            'CMD ["postgres"]',
            "EXPOSE 5432",
        ),
        files={"usr/local/bin/postgres-entrypoint": POSTGRES_ENTRYPOINT},
        setup="chmod 755 /usr/local/bin/postgres-entrypoint"
        " && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data"
        " && install -d -o postgres -g postgres /var/run/postgresql",
    ),
    # No entrypoint: compose gives the whole `redis-server ...` command, as with redis:7.
    # /data belongs to the redis user, so the named volume made from it does too.
    BaseImage(
        name="redis",
        official="redis:7",
        local="paysuite-local/redis:7",
        packages=("redis-server",),
        changes=("USER redis", "WORKDIR /data", 'CMD ["redis-server"]', "EXPOSE 6379"),
        setup="install -d -o redis -g redis /data",
    ),
    # wget for compose's readiness check, as in prom/prometheus (busybox's there).
    BaseImage(
        name="prometheus",
        official="prom/prometheus:v3.5.0",
        local="paysuite-local/prometheus:2",
        packages=("prometheus", "wget"),
        changes=(
            "USER nobody",
            'ENTRYPOINT ["/usr/bin/prometheus"]',
            'CMD ["--config.file=/etc/prometheus/prometheus.yml"]',
            "EXPOSE 9090",
        ),
        setup="install -d -o nobody -g nogroup /prometheus",
    ),
)

# The compose variables that name each image (docker-compose.yml reads them, with the
# official images as defaults).
VARIABLES = {
    "python": "PYTHON_IMAGE",
    "postgres": "POSTGRES_IMAGE",
    "redis": "REDIS_IMAGE",
    "prometheus": "PROMETHEUS_IMAGE",
}


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _label(tag: str) -> str | None:
    result = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    if result.returncode != 0:
        return None
    labels: dict[str, str] = json.loads(result.stdout) or {}
    return labels.get(RECIPE_LABEL, "")


def pullable(image: BaseImage, timeout: float) -> bool:
    """True when the official image is here already or a registry hands it over in time."""
    if _label(image.official) is not None:
        return True
    try:
        return _docker("pull", "--quiet", image.official, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build(image: BaseImage) -> bool:
    """Builds `image.local` from Debian unless the tag has this recipe already; True if built."""
    digest = image.recipe_digest()
    if _label(image.local) == digest:
        return False
    previous = _docker("image", "inspect", "--format", "{{.Id}}", image.local).stdout.strip()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"paysuite-{image.name}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(image, rootfs)
        _finish_rootfs(image, rootfs)
        _import(image, rootfs, digest)
    if previous:  # the image of an older recipe, now untagged
        _docker("image", "rm", previous)
    return True


def _debootstrap(image: BaseImage, rootfs: Path) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={CACHE}",
        f"--include={','.join(image.packages)}",
        SUITE,
        str(rootfs),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap for {image.name} failed:\n{result.stdout[-3000:]}")


def _finish_rootfs(image: BaseImage, rootfs: Path) -> None:
    for relative, text in image.files.items():
        (rootfs / relative).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / relative).write_text(text)
    for path in image.host_files:
        shutil.copyfile(path, rootfs / path.lstrip("/"))
    if image.setup:
        subprocess.run(["chroot", str(rootfs), "/bin/sh", "-ec", image.setup], check=True)
    # What an image need not carry: the .debs (kept in CACHE), package lists, docs.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)


def _import(image: BaseImage, rootfs: Path, digest: str) -> None:
    changes = [*image.changes, f"LABEL {RECIPE_LABEL}={digest}"]
    command = ["docker", "import", *(f"--change={c}" for c in changes), "-", image.local]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        subprocess.run(command, stdin=tar.stdout, capture_output=True, check=True)
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()


def choose(pull_timeout: float = 20.0) -> dict[str, str]:
    """The compose variables naming each base image: the official one where it can be had,
    otherwise the local one, built from Debian if it is not built yet."""
    chosen: dict[str, str] = {}
    for image in IMAGES:
        variable = VARIABLES[image.name]
        if os.environ.get(variable):
            chosen[variable] = os.environ[variable]
        elif pullable(image, pull_timeout):
            chosen[variable] = image.official
        else:
            built = build(image)
            print(f"  {image.local}: {'built from Debian' if built else 'cached'}", flush=True)
            chosen[variable] = image.local
    return chosen
